"""A synthetic site: cameras along a corridor that people walk through, with ground truth.

Where ``camtrace.synthetic.generate_footage`` sends each person past two random
cameras, a site has structure that a trace can use and must survive:

- **Routes with consistent transit times.** Cameras ``cam1 .. camN`` watch
  consecutive stretches of one corridor. A person enters at some camera and
  walks a run of consecutive cameras forwards (left to right in every view) or
  backwards (right to left). Between adjacent views the walk takes the pair's
  transit time times the person's pace (close to 1, a few per cent of spread),
  so each camera pair has a characteristic transit time in each direction.
- **Walkers at walking speed.** 1-2 m/s for a figure about 1.7 m tall: at 5 fps
  a person moves a third to a half of their own width between two sampled
  frames. They walk in from outside the view and out of it again, level or
  diagonally (towards or away from the camera).
- **Look-alikes.** A share of the people wear exactly what someone else wears
  (same description); only where and when they are seen tells them apart.
- **Groups.** A share of the people walk beside someone else (same route, same
  pace, a second or so apart, at another depth): they cross every view together
  and hide each other in part.
- **Occlusion.** Some cameras have pillars in front of the walkers; ground-truth
  boxes cover only what is visible (``visible`` is the share left uncovered).

``ground_truth.json`` is the usual synthetic ground truth (so ``synthetic:``
datasets and the quality benchmark read it) plus a ``site`` entry: the transit
times, groups and look-alikes. Deterministic from the seed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from camtrace.synthetic import Appearance, Footage, Identity, figure_height, make_identities, write_footage

PERSON_METRES = 1.7  # a figure's height stands for this many metres: it sets the walking speed in pixels


@dataclass(frozen=True)
class SiteConfig:
    """The layout of a synthetic site and the people who walk through it."""

    cameras: int = 4
    people: int = 60
    seconds: float = 480.0
    fps: float = 10.0
    size: tuple[int, int] = (640, 360)
    # Walking time between adjacent views (cam1-cam2, cam2-cam3, ...); repeated when there are more cameras.
    transit_seconds: tuple[float, ...] = (12.0, 20.0, 8.0)
    pace_spread: float = 0.05  # relative standard deviation of a person's pace between views
    speed_mps: tuple[float, float] = (1.0, 2.0)  # walking speed across a view
    lookalike_share: float = 0.25  # people dressed exactly like someone else
    group_share: float = 0.2  # people walking beside someone else
    diagonal_share: float = 0.4  # walks that change depth across a view
    pillar_cameras: tuple[int, ...] = (2, 4)  # 1-based cameras with pillars in front of the walkers
    min_route: int = 2  # cameras each person passes, at least
    seed: int = 0
    start_ts: float = 1_767_225_600.0
    identity_prefix: str = "p"
    scene_seed: int | None = None  # the cameras' scenes (None: ``seed``); two sites with one scene differ in people

    def transit(self, a: int, b: int) -> float:
        """Nominal walking time from leaving view ``a`` to entering adjacent view ``b`` (0-based, |a - b| = 1)."""
        return float(self.transit_seconds[min(a, b) % len(self.transit_seconds)])


def generate_site(out_dir: str | Path, config: SiteConfig = SiteConfig(), *, exclude_descriptions: Collection[str] = ()) -> Footage:
    """Write one MP4 per camera and ``ground_truth.json`` (with the ``site`` entry) into ``out_dir``."""
    if config.cameras < 2:
        raise ValueError("a site needs at least two cameras")
    if not 2 <= config.min_route <= config.cameras:
        raise ValueError(f"min_route must be between 2 and {config.cameras}")
    width, height = config.size
    if width < 320 or height < 180:
        raise ValueError(f"frame size {config.size} is too small for a site; use at least 320x180")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    camera_ids = [f"cam{k + 1}" for k in range(config.cameras)]

    people = make_identities(rng, config.people, config.identity_prefix, frozenset(exclude_descriptions))
    people, lookalikes = _dress_alike(rng, people, config.lookalike_share)
    n_frames = int(round(config.seconds * config.fps))
    appearances, groups = _walks(rng, people, config, n_frames)
    occluders = {camera_ids[k - 1]: _pillars(rng, config.size) for k in config.pillar_cameras if 1 <= k <= config.cameras}
    site = {
        "site": {
            "transit_seconds": {
                f"{camera_ids[k]}->{camera_ids[k + 1]}": config.transit(k, k + 1) for k in range(config.cameras - 1)
            },
            "groups": groups,
            "lookalikes": lookalikes,
            "config": {k: v for k, v in asdict(config).items()},
        }
    }
    scene_seed = config.seed if config.scene_seed is None else config.scene_seed
    return write_footage(
        out,
        camera_ids,
        people,
        appearances,
        n_frames=n_frames,
        fps=config.fps,
        size=config.size,
        start_ts=config.start_ts,
        seed=config.seed,
        scene_seed=scene_seed,
        occluders=occluders,
        visible_boxes=True,
        extra=site,
    )


def _dress_alike(rng: np.random.Generator, people: list[Identity], share: float) -> tuple[list[Identity], list[list[str]]]:
    """Dress ``share`` of the people exactly like another person (kept apart by height and skin only)."""
    count = int(round(share * len(people)))
    if count == 0 or len(people) < 2:
        return people, []
    order = [int(i) for i in rng.permutation(len(people))]
    copies, models = order[:count], order[count:] or order[:1]
    dressed = list(people)
    pairs: dict[str, list[str]] = {}
    for i, target in enumerate(copies):
        model = people[models[i % len(models)]]
        dressed[target] = replace(
            people[target],
            top=model.top,
            bottom=model.bottom,
            bottom_kind=model.bottom_kind,
            item=model.item,
            item_colour=model.item_colour,
        )
        pairs.setdefault(model.id, [model.id]).append(people[target].id)
    return dressed, sorted(sorted(group) for group in pairs.values())


def _walks(
    rng: np.random.Generator, people: list[Identity], config: SiteConfig, n_frames: int
) -> tuple[list[Appearance], list[list[str]]]:
    """Each person's route and their walk across every view on it; companions copy a leader's route."""
    fps, (width, height) = config.fps, config.size
    n_companions = int(round(config.group_share * len(people)))
    leaders = people[: len(people) - n_companions]
    companions = people[len(people) - n_companions :]
    partner = {c.id: leaders[int(rng.integers(len(leaders)))].id for c in companions}
    plans: dict[str, dict] = {}
    for person in leaders:
        length = int(rng.integers(config.min_route, config.cameras + 1))
        first = int(rng.integers(0, config.cameras - length + 1))
        route = list(range(first, first + length))
        if rng.random() < 0.5:
            route.reverse()
        plans[person.id] = {
            "route": route,
            "pace": float(np.clip(rng.normal(1.0, config.pace_spread), 0.8, 1.2)),
            "speed": float(rng.uniform(*config.speed_mps)),
            "lag": 0.0,
        }
    for person in companions:
        plans[person.id] = plans[partner[person.id]] | {"lag": float(rng.uniform(0.6, 1.4))}

    appearances: list[Appearance] = []
    starts: dict[str, float] = {}
    legs_of: dict[str, list[dict]] = {}
    for person in leaders + companions:
        plan = plans[person.id]
        if person.id in partner:
            # Beside the leader: the same walk (same timing) a little later, at a depth of its own.
            legs = [
                leg
                | {
                    "feet_y": _beside(rng, leg["feet_y"], height),
                    "feet_y_end": _beside(rng, leg["feet_y_end"], height),
                    "half_width": 0.32 * figure_height(person, leg["feet_y"], height),
                }
                for leg in legs_of[partner[person.id]]
            ]
        else:
            legs = [_leg(rng, person, plan["speed"], height, width, config.diagonal_share) for _ in plan["route"]]
        legs_of[person.id] = legs
        duration = sum(leg["seconds"] for leg in legs) + sum(
            config.transit(a, b) * plan["pace"] for a, b in zip(plan["route"], plan["route"][1:])
        )
        if person.id in partner:
            start = starts[partner[person.id]] + plan["lag"]
        else:
            latest = max(1.0, n_frames / fps - duration - 4.0)
            start = float(rng.uniform(1.0, latest))
        starts[person.id] = start
        clock = start
        forwards = plan["route"] == sorted(plan["route"])
        for k, (camera, leg) in enumerate(zip(plan["route"], legs)):
            frame_start = int(round(clock * fps))
            frame_end = min(n_frames - 1, frame_start + max(2, int(round(leg["seconds"] * fps))))
            if frame_start < n_frames - 2:
                x_left, x_right = -leg["half_width"], width + leg["half_width"]
                x_start, x_end = (x_left, x_right) if forwards else (x_right, x_left)
                appearances.append(
                    Appearance(
                        identity=person.id,
                        camera=f"cam{camera + 1}",
                        frame_start=frame_start,
                        frame_end=frame_end,
                        ts_start=config.start_ts + frame_start / fps,
                        ts_end=config.start_ts + frame_end / fps,
                        x_start=round(x_start, 2),
                        x_end=round(x_end, 2),
                        feet_y=round(leg["feet_y"], 2),
                        feet_y_end=round(leg["feet_y_end"], 2),
                    )
                )
            clock += leg["seconds"]
            if k + 1 < len(plan["route"]):
                clock += config.transit(camera, plan["route"][k + 1]) * plan["pace"]
    groups = sorted(sorted([leader, companion]) for companion, leader in partner.items())
    return appearances, groups


def _leg(rng: np.random.Generator, person: Identity, speed: float, height: int, width: int, diagonal: float) -> dict:
    """One walk across a view: depth at entry and exit, and how long it takes at ``speed`` m/s."""
    feet_y = float(rng.uniform(0.7, 0.95) * height)
    feet_y_end = feet_y
    if rng.random() < diagonal:  # towards or away from the camera
        feet_y_end = float(np.clip(feet_y + rng.choice([-1, 1]) * rng.uniform(0.08, 0.18) * height, 0.66 * height, 0.97 * height))
    fig_h = figure_height(person, (feet_y + feet_y_end) / 2, height)
    half_width = 0.32 * fig_h
    pixels_per_second = speed * fig_h / PERSON_METRES
    distance = width + 2 * half_width
    return {"feet_y": feet_y, "feet_y_end": feet_y_end, "half_width": half_width, "seconds": distance / pixels_per_second}


def _beside(rng: np.random.Generator, feet: float, height: int) -> float:
    offset = rng.uniform(0.04, 0.08) * height * rng.choice([-1, 1])
    return float(np.clip(feet + offset, 0.66 * height, 0.97 * height))


def _pillars(rng: np.random.Generator, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """One or two pillars standing in front of the walkers, from the upper half of the view to the floor."""
    width, height = size
    count = int(rng.integers(1, 3))
    slots = rng.permutation(np.linspace(0.25, 0.75, 3))[:count]
    pillars = []
    for centre in slots:
        half = int(rng.uniform(0.018, 0.03) * width)
        x = int(centre * width)
        pillars.append((x - half, int(rng.uniform(0.2, 0.4) * height), x + half, height))
    return pillars
