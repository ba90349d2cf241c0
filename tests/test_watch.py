"""The watchlist stage on the hand-made scene (tests/search_scene.py), where the right answers are known: entries,
the check of new tracks against them, alerts with their audit rows, acknowledging and dismissing."""

from __future__ import annotations

import numpy as np
import pytest
from search_scene import AXES, L1_BASE, PERSON, T0, build_scene, crop_vectors, install_evidence, turn, unit
from sqlalchemy import delete

from camtrace.errors import InputError, NotFoundError
from camtrace.search import SearchService
from camtrace.search.watch import NewTrack, Watcher, WatchService
from camtrace.storage.access import AccessStore
from camtrace.storage.watchlists import AlertDeliveryRow, AlertRow, WatchEntryRow


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    services = build_scene(tmp_path_factory.mktemp("watch-scene"), "edge")
    with services.index.session():
        yield services
    services.close()
    services.db.close()


@pytest.fixture
def watch(scene):
    install_evidence(scene)
    yield WatchService(scene, SearchService(scene))
    from camtrace.storage.sql import Feedback

    with scene.db.engine.begin() as conn:
        for table in (WatchEntryRow, AlertRow, AlertDeliveryRow, Feedback):
            conn.execute(delete(table))


def new_track(name: str, camera: str, start: float, end: float, base: np.ndarray) -> NewTrack:
    return NewTrack(name, camera, T0 + start, T0 + end, np.stack(crop_vectors(base, 0.1)), f"{camera}/v/{name}.jpg")


# The person of A1 (camA, 0-10 s) arrives on camB 20 s later as camA->camB takes, with a stranger beside them;
# a lookalike on camC while the person is still on camA (impossible); a stranger on camD long after.
PERSON_ON_B = new_track("N1", "camB", 31, 38, turn(PERSON, 9, 0.1))
STRANGER = new_track("N2", "camB", 32, 39, unit(AXES[6] + 0.1 * AXES[0]))
LOOKALIKE_AT_ONCE = new_track("N3", "camC", 4, 9, L1_BASE)
STRANGER_LATER = new_track("N4", "camD", 900, 910, unit(AXES[5] + 0.2 * AXES[0]))


def test_a_person_entry_alerts_on_the_person_only(watch, scene):
    entry = watch.add(username="ivy", track_id="A1", note="seen taking a bag")
    assert entry.kind == "person" and entry.cameras is None and entry.min_probability is None
    watcher = Watcher(scene)
    alerts = watcher.check([PERSON_ON_B, STRANGER, LOOKALIKE_AT_ONCE, STRANGER_LATER])
    assert [a.track_id for a in alerts] == ["N1"]
    alert = alerts[0]
    assert alert.entry_id == entry.id and alert.camera_id == "camB" and alert.status == "new"
    assert alert.probability >= scene.settings.trace_min_score and alert.score > 0.9
    # The same segment written again (a redelivered task) raises nothing new, and audits nothing new.
    assert watcher.check([PERSON_ON_B]) == []
    audit = AccessStore(scene.db).audit_rows(action="alert_raised")
    assert [(r.result_ids, r.detail["alert_id"]) for r in audit] == [(["N1"], alert.id)]


def test_cameras_window_and_bar_of_an_entry(watch, scene):
    watch.add(username="ivy", track_id="A1", cameras=["camC"])
    watch.add(username="ivy", track_id="A1", until=T0 + 20)
    watch.add(username="ivy", track_id="A1", min_probability=0.999999)
    assert Watcher(scene).check([PERSON_ON_B]) == []


def test_bad_entries_are_refused_like_unknown_ones(watch):
    with pytest.raises(NotFoundError, match="track 'nobody' does not exist"):
        watch.add(username="ivy", track_id="nobody")
    with pytest.raises(NotFoundError, match="track 'B1' does not exist"):  # a camera the user may not see
        watch.add(username="ivy", track_id="B1", allowed_cameras=["camA"])
    with pytest.raises(NotFoundError, match="unknown camera"):
        watch.add(username="ivy", track_id="A1", cameras=["camB"], allowed_cameras=["camA"])
    with pytest.raises(InputError, match="either a track"):
        watch.add(username="ivy")
    with pytest.raises(InputError, match="min_probability"):
        watch.add(username="ivy", track_id="A1", min_probability=1.5)
    with pytest.raises(InputError, match="since is after until"):
        watch.add(username="ivy", track_id="A1", since=T0 + 5, until=T0)
    # A limited user's entry watches their cameras only, and only they and unlimited users see it.
    limited = watch.add(username="ivy", track_id="A1", allowed_cameras=["camA", "camB"])
    assert limited.cameras == ("camA", "camB")
    assert [e.id for e in watch.entries(["camA", "camB", "camC"])] == [limited.id]
    assert watch.entries(["camA"]) == []
    with pytest.raises(NotFoundError):
        watch.remove(limited.id, ["camA"])
    watch.remove(limited.id, ["camA", "camB"])
    assert watch.entries() == []


def test_dismissing_an_alert_is_a_different_verdict_and_stops_further_alerts(watch, scene):
    entry = watch.add(username="ivy", track_id="A1")
    watcher = Watcher(scene)
    (alert,) = watcher.check([PERSON_ON_B])
    with pytest.raises(NotFoundError, match=f"alert {alert.id} does not exist"):
        watch.handle(alert.id, "dismiss", username="ivy", allowed_cameras=["camA"])
    with pytest.raises(InputError, match="acknowledge, dismiss"):
        watch.handle(alert.id, "ignore", username="ivy")
    handled = watch.handle(alert.id, "dismiss", username="ivy")
    assert handled.status == "dismissed" and handled.handled_by == "ivy"
    verdicts = scene.db.feedback_for(["A1"])
    assert [(v.track_id, v.candidate_track_id, v.verdict) for v in verdicts] == [("A1", "N1", "different")]
    # The watcher learns the verdict: the rejected track never alerts for this entry again.
    with scene.db.engine.begin() as conn:
        conn.execute(delete(AlertRow))
    assert watcher.check([PERSON_ON_B]) == []
    assert watch.entries()[0].id == entry.id


def test_a_person_who_stays_on_one_camera_alerts_once(watch, scene):
    watch.add(username="ivy", track_id="A1")
    watcher = Watcher(scene)
    assert [a.track_id for a in watcher.check([PERSON_ON_B])] == ["N1"]
    # The same stay cut into another track (a segment ended): within CAMTRACE_ALERT_REPEAT_SECONDS, no new alert.
    again = new_track("N5", "camB", 32, 40, turn(PERSON, 9, 0.1))
    assert watcher.matches([again]) and watcher.check([again]) == []
    assert scene.settings.alert_repeat_seconds == 120.0


def test_several_entries_are_scored_in_one_product_each_against_its_own_examples(watch, scene):
    from search_scene import C1_BASE

    a1 = watch.add(username="ivy", track_id="A1")
    c1 = watch.add(username="ivy", track_id="C1")  # the person of C1 (camC, 80-90 s); camC->camD takes 30 s
    on_d = new_track("N6", "camD", 120, 126, turn(C1_BASE, 5, 0.05))
    alerts = Watcher(scene).check([on_d, PERSON_ON_B, STRANGER])
    assert sorted((a.entry_id, a.track_id) for a in alerts) == sorted([(a1.id, "N1"), (c1.id, "N6")])


def test_the_command_line_adds_lists_and_removes_entries_audited(watch, scene, monkeypatch):
    import getpass
    import json

    from click.testing import CliRunner

    from camtrace.cli import cli

    env = {"CAMTRACE_DATA_DIR": str(scene.settings.data_dir)}
    runner = CliRunner()
    added = runner.invoke(cli, ["watch", "add", "--track", "A1", "--camera", "camB", "--note", "bag", "--json"], env=env)
    assert added.exit_code == 0, added.output
    entry = json.loads(added.output)
    assert entry["track_id"] == "A1" and entry["cameras"] == ["camB"] and entry["username"] == f"cli:{getpass.getuser()}"
    listed = runner.invoke(cli, ["watch", "list"], env=env)
    assert listed.exit_code == 0 and "person of track A1  [camB;" in listed.output and "note: bag" in listed.output
    unknown = runner.invoke(cli, ["watch", "add", "--track", "nobody"], env=env)
    assert unknown.exit_code != 0 and "track 'nobody' does not exist" in unknown.output
    removed = runner.invoke(cli, ["watch", "remove", str(entry["id"])], env=env)
    assert removed.exit_code == 0 and watch.entries() == []
    assert runner.invoke(cli, ["watch", "remove", str(entry["id"])], env=env).exit_code != 0
    actions = [(r.action, r.result_ids) for r in AccessStore(scene.db).audit_rows(limit=5) if r.action.startswith("watch")]
    assert actions == [("watch_remove", [str(entry["id"])]), ("watch_add", [str(entry["id"])])]


def test_a_delivery_is_claimed_by_one_sender_only(watch, scene):
    from camtrace.storage.watchlists import NewAlert, WatchStore

    store = WatchStore(scene.db)
    entry = watch.add(username="ivy", track_id="A1")
    store.add_alert(NewAlert(entry.id, "B1", "camB", T0 + 40, 0.9, 0.95, None), [("mqtt", "mqtt://broker")])
    (due,) = store.due_deliveries()
    assert store.claim(due, 60) and not store.claim(due, 60)  # the second sender finds it taken
    assert store.due_deliveries() == []  # nobody else sends it during the claim
    store.record_attempt(due.id, error="ConnectionRefusedError: down", next_at=T0)
    (again,) = store.due_deliveries()
    assert again.attempts == 1 and again.last_error == "ConnectionRefusedError: down" and store.claim(again, 60)
