"""train.precision / channels_last / compile (pipeline/training/acceleration.py): the defaults leave the
model and the step untouched; bf16 + channels_last train on CPU with finite float32 losses and float32
parameters; bad values name their key; peak memory is reported."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.constants import IGNORE_INDEX, NUM_CLASSES
from pipeline.models.configured import build_model
from pipeline.pseudo_labels.dynamic import PrototypeMemory
from pipeline.training.acceleration import (
    autocast,
    full_precision,
    input_batch,
    peak_memory,
    prepare_for_speed,
)
from pipeline.training.adapt import TwoDomains, objective_weights
from pipeline.training.adaptation_losses import ROWS, dass_objective
from pipeline.training.loop import LoopHooks, train
from pipeline.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SIZE = (32, 48)  # pixels; features 4×6 at output stride 8
IMAGES = 2  # per domain


def small_config(**train):
    overrides = {"model.width": 0.125} | {f"train.{key}": value for key, value in train.items()}
    return load_config(ROOT / "params.yaml", overrides=overrides)


def blocky_labels(generator: torch.Generator) -> torch.Tensor:
    """[IMAGES, H, W]: 4×6 blocks of random classes (so every feature pixel has a label), some ignored."""
    blocks = torch.randint(0, NUM_CLASSES, (IMAGES, 4, 6), generator=generator)
    blocks[:, 0, 0] = IGNORE_INDEX
    return blocks.repeat_interleave(SIZE[0] // 4, 1).repeat_interleave(SIZE[1] // 6, 2)


def test_defaults_leave_model_step_and_outputs_untouched(monkeypatch):
    config = load_config(ROOT / "params.yaml")
    assert (config.train.precision, config.train.channels_last, config.train.compile) == (
        "fp32",
        False,
        False,
    )
    torch.manual_seed(0)
    model = build_model(config)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    calls = compile_calls(monkeypatch)
    assert prepare_for_speed(model, config.train) is model and not calls
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())

    images = torch.randn(IMAGES, 3, *SIZE)
    assert input_batch(images, config.train) is images
    model.eval()
    with torch.no_grad():
        plain = model(images)
        with autocast(config.train, CPU):
            wrapped = model(images)
    assert full_precision(wrapped) is wrapped
    assert all(t.dtype == torch.float32 for t in wrapped)
    assert all(torch.equal(a, b) for a, b in zip(plain, wrapped, strict=True))  # bit-identical


def test_bf16_channels_last_adaptation_steps_are_finite_and_parameters_stay_float32():
    """The adapt worker's step (TwoDomains, autocast forward, float32 objective) for a few CPU steps."""
    config = small_config(precision="bf16", channels_last=True)
    torch.manual_seed(0)
    segmentor = prepare_for_speed(build_model(config), config.train)
    conv = segmentor.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    model = TwoDomains(segmentor).train()
    optimizer = build_optimizer(model, dataclasses.replace(config.train.optim, lr=config.adapt.lr))
    memory = PrototypeMemory(NUM_CLASSES, segmentor.embedding_dim, config.adapt.ema_momentum,
                             init=config.adapt.memory_init)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    source, target = torch.randn(2, IMAGES, 3, *SIZE, generator=generator)
    source_labels, static = blocky_labels(generator), blocky_labels(generator)
    dtypes = []

    def step_losses(step):
        with autocast(config.train, CPU):
            outputs = model(input_batch(source, config.train), input_batch(target, config.train))
        dtypes.append(outputs[0].logits.dtype)
        source_out, target_out = (full_precision(output) for output in outputs)
        assert all(t.dtype == torch.float32 for out in (source_out, target_out) for t in out)
        outcome = dass_objective(source_out.logits, source_out.embedding, source_labels, target_out.logits,
                                 target_out.embedding, static, memory, ROWS["dass"],
                                 objective_weights(config))  # fmt: skip
        assert all(loss.dtype == torch.float32 for loss in outcome.losses.values())
        return outcome.losses

    logged = []
    hooks = LoopHooks(log=lambda step, metrics: logged.append(metrics), log_every=1)
    result = train(step_losses, optimizer, 3, config.train.optim.poly_power, hooks=hooks)
    assert result.steps == 3 and dtypes == [torch.bfloat16] * 3  # autocast did run the forward in bf16
    assert {"ce_source", "ce_target", "contrast_fc", "contrast_bc"} <= set(logged[-1])
    assert all(math.isfinite(value) for metrics in logged for value in metrics.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert memory.mu_source.dtype == torch.float32 and bool(memory.seen_source.any())
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the SGD step keeps the format


def compile_calls(monkeypatch) -> list[torch.nn.Module]:
    """The modules `nn.Module.compile` is called on from now (the real method still runs)."""
    calls = []
    real = torch.nn.Module.compile

    def recorded(self, *args, **kwargs):
        calls.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recorded)
    return calls


def test_compile_switch_compiles_in_place_keeping_state_dict_keys(monkeypatch):
    """`nn.Module.compile` on the model itself (in place, lazy: nothing is compiled before a forward),
    so `unwrap` and checkpoints see the same module and keys."""
    config = small_config(compile=True)
    model = build_model(config)
    keys = list(model.state_dict())
    calls = compile_calls(monkeypatch)
    assert prepare_for_speed(model, config.train) is model
    assert calls == [model]
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("train.precision", "fp16", "train.precision = 'fp16' is not allowed (one of: fp32 | bf16)"),
        ("train.channels_last", "yes", "train.channels_last = 'yes' must be true or false"),
        ("train.compile", 1, "train.compile = 1 must be true or false"),
    ],
)
def test_bad_speed_switch_names_its_key(key, value, expected):
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "params.yaml", overrides={key: value})
    assert expected in str(error.value)


def test_peak_memory_reports_this_process_rss():
    figures = peak_memory(CPU)
    assert set(figures) == {"memory.peak_rss_mb"} and figures["memory.peak_rss_mb"] > 10
