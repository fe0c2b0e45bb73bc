"""detkit.runtime.cpu: the CPU in words, as benchmarks print it beside their figures."""

import platform

from detkit.runtime import cpu


def test_speed_flags_keep_their_order_and_drop_the_rest():
    assert cpu.speed_flags({"sse2", "amx_bf16", "avx2", "avx512_bf16"}) == ["avx2", "avx512_bf16", "amx_bf16"]
    assert cpu.speed_flags(set()) == []


def test_describe_cpu_names_the_model_and_the_bf16_path(monkeypatch):
    info = {("model name", "Model"): "Test CPU 9000", ("flags", "Features"): "sse2 avx2 avx512f avx512_bf16"}
    monkeypatch.setattr(cpu, "_cpuinfo_value", lambda keys: info[keys])
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert cpu.describe_cpu() == "Test CPU 9000 (avx2 avx512f avx512_bf16; no AMX)"
    info[("flags", "Features")] = "avx2 amx_tile amx_bf16"
    assert cpu.describe_cpu() == "Test CPU 9000 (avx2 amx_tile amx_bf16)"


def test_this_machine_is_described():
    assert cpu.cpu_model() and cpu.describe_cpu().startswith(cpu.cpu_model())
