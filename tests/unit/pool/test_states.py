import pytest

from warmstart.pool.scaling import replicas_to_start
from warmstart.pool.states import TRANSITIONS, IllegalTransition, model_state, transition
from warmstart.pool.states import ReplicaState as S


def test_every_state_has_a_way_out_and_cold_is_reachable_from_every_state():
    for state in S:
        assert TRANSITIONS[state], state
    # walk back to COLD from anywhere
    for start in S:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert S.COLD in seen or start is S.COLD


@pytest.mark.parametrize("current,target", [
    (S.COLD, S.WARM), (S.WARM, S.STARTING), (S.STOPPING, S.WARM), (S.FAILED, S.WARM), (S.COLD, S.STOPPING),
])
def test_illegal_moves_are_refused(current, target):
    with pytest.raises(IllegalTransition):
        transition(current, target)


def test_the_lifecycle_path():
    state = S.COLD
    for target in (S.STARTING, S.WARM, S.SLEEPING, S.WARM, S.STOPPING, S.COLD):
        state = transition(state, target)
    assert state is S.COLD


def test_model_state_is_its_best_replicas():
    assert model_state([]) is S.COLD
    assert model_state([S.FAILED, S.STARTING]) is S.STARTING
    assert model_state([S.STARTING, S.WARM]) is S.WARM


@pytest.mark.parametrize("kw,expected", [
    (dict(waiting=0, free_warm_slots=0, starting=0, live=0, capacity=1, max_replicas=1), 0),
    (dict(waiting=20, free_warm_slots=0, starting=0, live=0, capacity=1, max_replicas=1), 1),
    (dict(waiting=20, free_warm_slots=0, starting=1, live=1, capacity=1, max_replicas=1), 0),
    (dict(waiting=5, free_warm_slots=0, starting=0, live=1, capacity=1, max_replicas=4), 3),
    (dict(waiting=5, free_warm_slots=5, starting=0, live=1, capacity=8, max_replicas=4), 0),
    (dict(waiting=9, free_warm_slots=0, starting=1, live=1, capacity=8, max_replicas=4), 1),
])
def test_replicas_to_start(kw, expected):
    assert replicas_to_start(**kw) == expected
