"""Single person views with occluders: the share hidden is the share asked for, and nothing is hidden at 0."""

from __future__ import annotations

import numpy as np
import pytest

from camtrace.synthetic import make_identities, person_view


@pytest.mark.parametrize("occluder", ["object", "person"])
def test_the_hidden_share_follows_the_level_asked_for(occluder):
    people = make_identities(np.random.default_rng(1), 5)
    for level in (0.0, 0.2, 0.4, 0.6):
        for seed in range(3):
            view = person_view(people[0], np.random.default_rng(seed), occlusion=level, occluder=occluder, others=people[1:])
            assert view.identity == people[0].id and view.image.dtype == np.uint8 and view.image.shape[2] == 3
            assert view.occluded == pytest.approx(level, abs=0.06)
            assert view.image.shape[0] > view.image.shape[1]  # a standing person's box


def test_views_are_deterministic_and_an_occluder_changes_the_pixels():
    people = make_identities(np.random.default_rng(1), 3)
    a = person_view(people[0], np.random.default_rng(5))
    b = person_view(people[0], np.random.default_rng(5))
    np.testing.assert_array_equal(a.image, b.image)
    hidden = person_view(people[0], np.random.default_rng(5), occlusion=0.4, occluder="person", others=people[1:])
    assert hidden.image.shape != a.image.shape or np.abs(hidden.image.astype(int) - a.image).mean() > 5
    with pytest.raises(ValueError, match="other identities"):
        person_view(people[0], np.random.default_rng(0), occlusion=0.2, occluder="person")
    with pytest.raises(ValueError, match="occluder"):
        person_view(people[0], np.random.default_rng(0), occlusion=0.2, occluder="tree")
