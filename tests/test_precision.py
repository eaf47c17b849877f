"""Precision: bf16 only where the hardware runs it natively and faster; one resolved choice for every model path.

The hardware probe (oneDNN's bf16 answer and the timed products) is replaced by a stub in the resolver
tests, so each case holds on any machine; the last test runs the real probe of this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from sessionbert_core.config import ModelSize
from sessionbert_core.model import precision
from sessionbert_core.model.inference import predict_top_k
from sessionbert_core.model.networks import (
    SessionBertForNextActivity,
    attention_implementation,
    encoder_config,
    next_activity_config,
)
from sessionbert_core.model.precision import Precision, resolve_precision, use_bf16
from sessionbert_core.model.tokenizer import embedding_rows, train_tokenizer
from sessionbert_core.model.train import TrainSettings, _arguments
from sessionbert_core.personas.embed import embed_texts


@pytest.fixture
def hardware(monkeypatch):
    """A stub of the hardware probe: `hardware(native=..., bf16=GFLOP/s, fp32=GFLOP/s)`."""

    def stub(native: bool, bf16: float = 400.0, fp32: float = 150.0) -> None:
        monkeypatch.setattr(precision, "native_bf16", lambda device: native)
        monkeypatch.setattr(precision, "cpu_bf16_support",
                            lambda: (native, "bf16 native (AMX)" if native else "this CPU has no bf16 instructions"))
        monkeypatch.setattr(precision, "matmul_gflops",
                            lambda dtype, *args, **kwargs: bf16 if dtype == torch.bfloat16 else fp32)
        precision._resolve.cache_clear()

    yield stub
    precision._resolve.cache_clear()


def test_auto_picks_fp32_where_bf16_is_not_native(hardware):
    hardware(native=False, bf16=0.7, fp32=80.0)  # stub: an AVX2-only CPU that emulates bf16
    chosen = resolve_precision("cpu", "auto")
    assert chosen.name == "fp32" and not chosen.bf16
    assert "no bf16 instructions" in chosen.reason and chosen.native_bf16 is False


def test_auto_picks_bf16_where_it_is_native_and_faster(hardware):
    hardware(native=True, bf16=400.0, fp32=170.0)  # stub: AVX-512 BF16 or AMX
    chosen = resolve_precision("cpu", "auto")
    assert chosen.name == "bf16" and chosen.bf16
    assert chosen.probe_bf16_gflops == 400.0 and chosen.probe_fp32_gflops == 170.0


def test_a_busy_machine_cannot_flip_native_bf16_to_fp32(hardware):
    hardware(native=True, bf16=160.0, fp32=150.0)  # stub: native, the probe skewed by another job (1.1x)
    assert resolve_precision("cpu", "auto").name == "bf16"


def test_the_probe_vetoes_bf16_that_runs_emulated_after_all(hardware):
    hardware(native=True, bf16=2.4, fp32=97.8)  # stub: the hardware says native, the products say emulated
    chosen = resolve_precision("cpu", "auto")
    assert chosen.name == "fp32" and "emulated" in chosen.reason


AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CHOICE = ("from sessionbert_core.model.precision import resolve_precision; "
          "p = resolve_precision('cpu', 'auto'); print(p.name); print(p.reason)")


def _choice_in_a_process(env: dict[str, str]) -> tuple[str, str]:
    """`auto`'s choice and reason in a fresh process whose environment is this one's, AVX2 caps dropped, plus
    `env` (the caps act when PyTorch starts)."""
    base = {name: value for name, value in os.environ.items() if name not in AVX2_ONLY}
    done = subprocess.run([sys.executable, "-c", CHOICE], env=base | env, capture_output=True, text=True,
                          check=True, timeout=120)
    name, reason = done.stdout.strip().splitlines()[-2:]
    return name, reason


def test_a_cpu_held_to_avx2_runs_fp32():
    name, reason = _choice_in_a_process(AVX2_ONLY)
    assert name == "fp32"
    assert "AVX2" in reason or "no bf16 instructions" in reason  # held to AVX2, or without bf16 at all


@pytest.mark.skipif(not precision.cpu_bf16_support()[0], reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_a_cpu_with_native_bf16_runs_bf16():
    name, reason = _choice_in_a_process({})
    assert name == "bf16" and reason.startswith("bf16 native"), reason


def test_auto_on_cuda_follows_the_device_support(hardware):
    hardware(native=True)
    assert precision._resolve("cuda", "auto").name == "bf16"
    hardware(native=False)
    assert precision._resolve("cuda", "auto").name == "fp32"


def test_an_explicit_precision_is_kept_and_a_wrong_one_named(hardware):
    hardware(native=False)
    assert resolve_precision("cpu", "bf16").name == "bf16"
    assert resolve_precision("cpu", "fp32").name == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        resolve_precision("cpu", "fp16")


def test_environment_sets_the_precision(hardware, monkeypatch):
    hardware(native=True)
    monkeypatch.setenv("SESSIONBERT_PRECISION", "fp32")
    assert resolve_precision("cpu").name == "fp32"
    monkeypatch.setenv("SESSIONBERT_PRECISION", "auto")
    assert resolve_precision("cpu").name == "bf16"


def test_the_probe_runs_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (True, "bf16 native (AMX)"))
    monkeypatch.setattr(precision, "matmul_gflops", lambda dtype, *a, **k: calls.append(dtype) or 100.0)
    precision._resolve.cache_clear()
    try:
        for _ in range(3):
            resolve_precision("cpu", "auto")
        assert len(calls) == 2  # one product per precision, then the kept answer
    finally:
        precision._resolve.cache_clear()


def test_metadata_names_the_choice_and_leaves_out_absent_figures():
    figures = Precision("fp32", "cpu", "auto", "bf16 is not native", native_bf16=False).metadata()
    assert figures == {"precision": "fp32", "precision_requested": "auto", "precision_reason": "bf16 is not native",
                       "precision_native_bf16": False}


# ----------------------------------------------------------------------------------------------
# callers without a precision of their own use the resolved one


class _AutocastSpy(torch.nn.Module):
    """Wraps a model and records whether CPU autocast to bf16 was on during each forward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config, self.seen = model, model.config, []

    def forward(self, **inputs):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return self.model(**inputs)


@pytest.fixture(scope="module")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    texts = ["[CLS] [activity] iam;users [SEP] vpc;subnets [SEP]", "[CLS] [activity] vpc;vpcs [SEP] iam;roles [SEP]"]
    return train_tokenizer(texts * 20, "wordlevel")


@pytest.mark.parametrize("resolved", ["bf16", "fp32"])
def test_embedding_without_a_precision_uses_the_resolved_one(hardware, monkeypatch, tiny_tokenizer, resolved):
    hardware(native=True)
    monkeypatch.setenv("SESSIONBERT_PRECISION", resolved)
    config = BertConfig(vocab_size=embedding_rows(tiny_tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    spy = _AutocastSpy(BertModel(config).eval())
    embed_texts(spy, tiny_tokenizer, ["[CLS] [activity] iam;users [SEP]"])
    assert spy.seen == [resolved == "bf16"]


@pytest.mark.parametrize("resolved", ["bf16", "fp32"])
def test_prediction_and_training_without_a_precision_use_the_resolved_one(hardware, monkeypatch, tmp_path,
                                                                         tiny_tokenizer, resolved):
    hardware(native=True)
    monkeypatch.setenv("SESSIONBERT_PRECISION", resolved)
    size = ModelSize(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=32)
    config = next_activity_config(encoder_config(size, embedding_rows(tiny_tokenizer), tiny_tokenizer.pad_token_id),
                                  ["iam", "vpc"], ["iam;users", "vpc;vpcs"], tiny_tokenizer.mask_token_id,
                                  {"service": 1.0, "page": 1.0})
    spy = _AutocastSpy(SessionBertForNextActivity(config).eval())
    predict_top_k(spy, tiny_tokenizer, ["[CLS] [activity] iam;users [SEP] [MASK]"], top_k_services=1, top_k_pages=1)
    assert spy.seen == [resolved == "bf16"]
    assert TrainSettings().bf16 is None  # no default of its own
    assert _arguments(TrainSettings(), tmp_path, 10, ["labels"]).bf16 == (resolved == "bf16")


def test_an_explicit_choice_wins_over_the_resolved_one(hardware, monkeypatch):
    hardware(native=True)
    monkeypatch.setenv("SESSIONBERT_PRECISION", "bf16")
    assert use_bf16(False, "cpu") is False and use_bf16(None, "cpu") is True


def test_this_machine_resolves_to_a_precision_it_runs():
    """The real probe (no stub): whatever it picks, a product in that precision runs and is finite."""
    precision._resolve.cache_clear()
    chosen = resolve_precision("cpu", "auto")
    assert chosen.name in ("bf16", "fp32") and chosen.reason
    dtype = torch.bfloat16 if chosen.bf16 else torch.float32
    assert torch.isfinite(torch.ones(8, 8, dtype=dtype) @ torch.ones(8, 8, dtype=dtype)).all()
    if chosen.bf16:
        assert chosen.native_bf16 and chosen.probe_bf16_gflops > chosen.probe_fp32_gflops


def test_attention_is_eager_only_under_bf16_on_cpu(hardware):
    hardware(native=True)
    assert attention_implementation("cpu", bf16=True) == "eager"  # SDPA's bf16 CPU path measured 2x slower
    assert attention_implementation("cpu", bf16=False) == "sdpa"
    hardware(native=False)  # stub: emulated bf16, so auto resolves to fp32
    assert attention_implementation("cpu") == "sdpa"


def test_the_general_language_encoder_keeps_sdpa_under_bf16_on_cpu():
    """all-MiniLM-L6-v2 ran faster with SDPA in bf16 too (benchmarks/NOTES.md): it does not follow
    SessionBERT's eager attention there."""
    from sessionbert_core.personas.embed import load_general_language_encoder

    encoder, _ = load_general_language_encoder("cpu", bf16=True)
    assert encoder.config._attn_implementation == "sdpa"
