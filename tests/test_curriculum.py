"""Curriculum: hand values of the schedules, and per-sample strategy frequencies that follow them."""
import pytest
import torch

from c2fmae import curriculum, masking


@pytest.mark.parametrize("t,expected", [
    (0.0, (1.0, 0.0, 0.0)), (0.2, (0.5, 0.5, 0.0)), (0.4, (0.0, 1.0, 0.0)), (0.6, (0.0, 0.5, 0.5)),
    (0.8, (0.0, 0.0, 1.0)), (1.0, (0.0, 0.0, 1.0)), (1.5, (0.0, 0.0, 1.0)),
])
def test_linear_schedule_hand_values(t, expected):
    assert curriculum.strategy_probs(t) == pytest.approx(expected)


def test_other_schedules():
    assert curriculum.strategy_probs(0.2, "cosine") == pytest.approx((0.5, 0.5, 0.0))  # midpoint of the ramp
    assert curriculum.strategy_probs(0.1, "cosine")[0] > curriculum.strategy_probs(0.1)[0]  # eased
    assert curriculum.strategy_probs(0.1, "step") == (1.0, 0.0, 0.0)
    assert curriculum.strategy_probs(0.3, "step") == (0.0, 1.0, 0.0)
    assert curriculum.strategy_probs(0.7, "step") == (0.0, 0.0, 1.0)
    assert curriculum.strategy_probs(0.3, "fixed", fixed_probs=(1, 1, 2)) == pytest.approx((0.25, 0.25, 0.5))
    with pytest.raises(ValueError, match="schedule='poly'"):
        curriculum.strategy_probs(0.3, "poly")
    with pytest.raises(ValueError, match="t1=0.9, t2=0.5"):
        curriculum.strategy_probs(0.3, t1=0.9, t2=0.5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_strategy_frequencies_follow_the_curriculum(schedule, t):
    torch.manual_seed(0)
    probs = curriculum.strategy_probs(t, schedule)
    s = curriculum.draw_strategy(probs, 40000)
    freq = torch.bincount(s, minlength=3).float() / s.numel()
    assert freq.tolist() == pytest.approx(probs, abs=0.015)


def test_model_draws_strategies_from_the_curriculum():
    from c2fmae.models.c2fmae import C2FMAE, C2FMAEConfig

    torch.manual_seed(0)
    model = C2FMAE(C2FMAEConfig(encoder="c2fmae_vit_test", decoder_dim=32, decoder_heads=2, decoder_depth=1,
                                num_classes=5, max_instances=8))
    B = 1000
    batch = {"image": torch.zeros(B, 3, 64, 64), "semantic": torch.randint(0, 5, (B, 16, 16)),
             "instance": torch.randint(0, 4, (B, 16, 16))}
    for t in (0.1, 0.5):
        s = model.prepare(batch, progress=t)["strategy"]
        freq = torch.bincount(s, minlength=3).float() / B
        assert freq.tolist() == pytest.approx(curriculum.strategy_probs(t), abs=0.05)
    assert masking.STRATEGIES[int(model.prepare(batch, progress=0.99)["strategy"][0])] == "random"
