"""chattune.compute: detection, allow lists against catalog tags, the memory estimate."""

from __future__ import annotations

import pytest

from chattune.catalog import get_entry
from chattune.compute import (
    ComputeInfo,
    Gpu,
    check,
    detect,
    estimate_training_memory,
    estimate_training_memory_gb,
    local_size,
)

PHI3 = "phi-3-mini-4k-instruct"


def cpu_box(ram: float = 64.0) -> ComputeInfo:
    return ComputeInfo(size="local-cpu", cpu_cores=8, ram_gb=ram, ram_available_gb=ram, gpus=[])


def gpu_box(memory_gb: float, count: int = 1) -> ComputeInfo:
    gpus = [Gpu(i, "NVIDIA A100-SXM4-80GB", memory_gb) for i in range(count)]
    return ComputeInfo(size=f"local-{count}xA100", cpu_cores=16, ram_gb=256, ram_available_gb=200, gpus=gpus)


def test_detect_returns_sane_values() -> None:
    info = detect()
    assert info.cpu_cores >= 1
    assert info.ram_gb > 0
    assert 0 <= info.ram_available_gb <= info.ram_gb + 0.1
    assert info.provisioning_state == "Succeeded"
    assert info.has_cuda == bool(info.gpus)
    if info.gpus:
        assert info.size == local_size(info.gpus)
        assert all(g.memory_gb > 0 for g in info.gpus)
    else:
        assert info.size == "local-cpu"
    as_dict = info.to_dict()
    assert as_dict["gpu_count"] == len(info.gpus)
    assert as_dict["cpu_cores"] == info.cpu_cores


class _Props:
    """What torch.cuda.get_device_properties says of an A100 80GB (no GPU here: the device description is faked)."""

    name = "NVIDIA A100-SXM4-80GB"
    total_memory = 85_051_572_224  # 79.2 GiB, as the card reports it


def test_a_local_80gb_gpu_has_a_size_the_seed_allow_list_check_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed notebook's own check: ``compute.size.lower()`` in the model's finetune_compute_allow_list."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _Props())
    info = detect()
    assert info.size == "Standard_NC24ads_A100_v4" and info.gpus[0].memory_gb == 79.2
    allow = [x.lower() for x in get_entry(PHI3).finetune_compute_allow_list or []]
    assert info.size.lower() in allow
    assert check(get_entry(PHI3), info).allow_list_ok is True


@pytest.mark.parametrize(
    ("count", "memory_gb", "size"),
    [
        (1, 79.2, "Standard_NC24ads_A100_v4"),
        (2, 79.2, "Standard_NC48ads_A100_v4"),
        (8, 39.4, "Standard_ND96asr_v4"),
        (1, 139.8, "Standard_NC24ads_A100_v4"),  # an H200 meets the 80 GB size
        (1, 23.6, "Standard_NC6s_v3"),  # a 24 GB card meets a V100 16 GB size
        (1, 7.8, "local-1xGPU"),  # below every listed size
    ],
)
def test_local_size_is_the_largest_azure_size_the_gpus_match(count: int, memory_gb: float, size: str) -> None:
    assert local_size([Gpu(i, "GPU", memory_gb) for i in range(count)]) == size
    assert local_size([]) == "local-cpu"


def test_phi3_allow_list_fails_without_gpu() -> None:
    result = check(get_entry(PHI3), cpu_box())
    assert result.allow_list_ok is False
    assert result.ok is False
    assert result.device == "cpu"
    assert result.allow_list == get_entry(PHI3).finetune_compute_allow_list
    assert any("no CUDA GPU" in m for m in result.messages)
    assert any("Standard_NC24ads_A100_v4" in m for m in result.messages)


def test_phi3_allow_list_passes_on_80gb_gpu() -> None:
    result = check(get_entry(PHI3), gpu_box(80.0))
    assert result.allow_list_ok is True
    assert result.device == "cuda"
    assert result.available_memory_gb == 80.0
    assert result.fits is True
    assert result.ok is True
    assert result.messages == []
    assert result.to_dict()["model"] == PHI3


def test_phi3_allow_list_refuses_a_small_gpu() -> None:
    result = check(get_entry(PHI3), gpu_box(8.0))
    assert result.allow_list_ok is False
    assert any("best GPU has 8.0 GB" in m for m in result.messages)


def test_inference_allow_list_tag_can_be_chosen() -> None:
    result = check(get_entry(PHI3), gpu_box(80.0), allow_list_tag="inference_compute_allow_list")
    assert result.allow_list == get_entry(PHI3).inference_compute_allow_list


def test_smollm2_passes_on_cpu() -> None:
    result = check(get_entry("smollm2-135m-instruct"), cpu_box(16.0))
    assert result.allow_list is None
    assert result.allow_list_ok is True
    assert result.fits is True
    assert result.ok is True
    assert result.device == "cpu"
    assert result.available_memory_gb == 16.0
    assert 0 < result.estimated_memory_gb < 16.0


def test_memory_that_does_not_fit_is_reported() -> None:
    result = check(get_entry("smollm2-135m-instruct"), cpu_box(0.1))
    assert result.fits is False
    assert result.ok is False
    assert any("GB needed for training, 0.1 GB available on cpu" in m for m in result.messages)


@pytest.mark.parametrize("size", ["Standard_NC6", "standard_nc24r"])
def test_k80_sizes_refused_when_model_has_no_allow_list(size: str) -> None:
    info = ComputeInfo(size=size, cpu_cores=6, ram_gb=56, ram_available_gb=56, gpus=[Gpu(0, "Tesla K80", 12.0)])
    result = check(get_entry("smollm2-135m-instruct"), info)
    assert result.allow_list_ok is False
    assert any("unsupported (K80)" in m for m in result.messages)


def test_memory_estimate_orders() -> None:
    full = estimate_training_memory_gb(3_821_079_552, lora=False)
    lora = estimate_training_memory_gb(3_821_079_552, lora=True)
    half = estimate_training_memory_gb(3_821_079_552, lora=True, precision="16")
    assert full > lora > half > 0
    # Full fine-tuning keeps 16 bytes per weight at least (fp32 weights + gradients + two Adam moments).
    assert full > 3_821_079_552 * 16 / 2**30
    assert estimate_training_memory_gb(1000, lora=True, batch_size=4) > estimate_training_memory_gb(1000, lora=True)


def test_zero_stages_partition_per_device_memory() -> None:
    phi3 = 3_821_079_552
    ddp = estimate_training_memory(phi3, lora=False, precision="16", world_size=4)
    z1 = estimate_training_memory(phi3, lora=False, precision="16", world_size=4, zero_stage=1)
    z2 = estimate_training_memory(phi3, lora=False, precision="16", world_size=4, zero_stage=2)
    z3 = estimate_training_memory(phi3, lora=False, precision="16", world_size=4, zero_stage=3)
    offload = estimate_training_memory(
        phi3, lora=False, precision="16", world_size=4, zero_stage=2, offload_optimizer=True
    )
    assert ddp.total_gb > z1.total_gb > z2.total_gb > z3.total_gb
    assert z1.optimizer_gb == pytest.approx(ddp.optimizer_gb / 4, rel=1e-3)
    assert z2.gradients_gb == pytest.approx(ddp.gradients_gb / 4, rel=1e-3)
    assert z3.weights_gb == pytest.approx(ddp.weights_gb / 4, rel=1e-3)
    assert z2.weights_gb == ddp.weights_gb
    # Azure's stage-2 config offloads the optimizer: none of it on the GPU, all of it (every shard) in host RAM.
    assert offload.optimizer_gb == 0 and offload.offloaded_gb == pytest.approx(ddp.optimizer_gb, rel=1e-2)
    # The parts add up to the total.
    parts = ddp.weights_gb + ddp.gradients_gb + ddp.optimizer_gb + ddp.activations_gb + ddp.logits_gb
    assert parts == pytest.approx(ddp.total_gb, abs=0.02)


def test_gpu_check_compares_the_per_device_share_with_the_smallest_gpu() -> None:
    entry = get_entry(PHI3)
    info = ComputeInfo(
        size="x", cpu_cores=8, ram_gb=512, ram_available_gb=400, gpus=[Gpu(i, "A100", 40.0) for i in range(4)]
    )
    full = check(entry, info, lora=False, precision="16", world_size=4)
    zero3 = check(entry, info, lora=False, precision="16", world_size=4, zero_stage=3)
    assert full.fits is False and full.available_memory_gb == 40.0
    assert zero3.fits is True and zero3.estimated_memory_gb < 40.0


def test_cpu_processes_share_the_ram() -> None:
    one = check(get_entry("smollm2-135m-instruct"), cpu_box(64.0))
    two = check(get_entry("smollm2-135m-instruct"), cpu_box(64.0), world_size=2)
    assert two.estimated_memory_gb == pytest.approx(2 * one.estimated_memory_gb, abs=0.02)


def test_torch_processes_share_the_cores_unless_the_environment_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    from chattune import processes

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(processes, "usable_cores", lambda: 8)
    monkeypatch.setattr(processes.psutil, "cpu_count", lambda logical=True: 8)
    assert processes.share_cores(1) == {}  # one process: torch's own default, every core
    assert processes.share_cores(2) == {"OMP_NUM_THREADS": "4"}
    assert processes.share_cores(3) == {"OMP_NUM_THREADS": "2"}
    assert processes.share_cores(16) == {"OMP_NUM_THREADS": "1"}  # never 0
    assert [processes.threads_each(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]  # what a running instance is told
    # 8 CPUs that are 4 cores with 2 hyperthreads each: a thread per physical core, as torch's own default
    monkeypatch.setattr(processes.psutil, "cpu_count", lambda logical=True: 8 if logical else 4)
    assert processes.threads_each(1) == 4 and processes.share_cores(2) == {"OMP_NUM_THREADS": "2"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert processes.share_cores(2) == {}  # the user's choice stays (child_env passes it on)
    assert processes.threads_each(2) is None
