"""machine.py: the commands' malloc setting, measured by the page faults a training step takes; thread counts."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from speechrnn.core import machine
from speechrnn.core.machine import keep_freed_memory, torch_threads, training_threads

from helpers import subprocess_env

needs_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Training steps of the default model on one random batch, in a fresh process: the median of the
# minor page faults of the last steps. The first steps fill the heap and do fault, and a kept heap
# still grows now and then (a step of ~100-1,000 faults among steps of one), so the mean of a few
# steps swings; the median is what a typical step pays.
STEPS = textwrap.dedent("""
    import resource, statistics, sys
    import torch
    from hydra.utils import instantiate
    from speechrnn.core.machine import keep_freed_memory
    from speechrnn.training.config import compose

    applied = keep_freed_memory() if sys.argv[1] == "kept" else None
    cfg = compose("train")
    labels = [f"w{i}" for i in range(12)]
    module = instantiate(cfg.model, labels=labels, features=cfg.features, _recursive_=False)
    optimizer = torch.optim.AdamW(module.parameters())
    wave, y = torch.randn(32, 16000), torch.randint(0, 12, (32,))

    def step():
        loss = torch.nn.functional.cross_entropy(module(wave), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    for _ in range(5):
        step()
    per_step = []
    for _ in range(25):
        before = faults()
        step()
        per_step.append(faults() - before)
    print(applied, statistics.median(per_step))
""")


def faults_per_step(mode: str) -> tuple[str, float]:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()[-2:]
    return applied, float(faults)


@needs_glibc
def test_a_training_step_reuses_freed_memory_instead_of_faulting_in_new_pages():
    applied, kept = faults_per_step("kept")
    _, default = faults_per_step("default")
    assert applied == "True"
    # glibc's default gives large freed blocks back to the OS, and a step maps its pages in
    # again (3,000-4,000 faults a step on the one machine measured, an AMD EPYC); kept, it reuses the heap
    assert kept <= max(50.0, default / 20), (kept, default)


@needs_glibc  # elsewhere it returns False whatever the environment
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_the_users_own_malloc_settings_are_left_alone(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert keep_freed_memory() is False


def test_torch_threads_holds_the_count_for_its_block_and_gives_back_the_one_it_found():
    torch.set_num_threads(2)  # conftest sets the suite's count again after the test
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2  # given back when the block fails too


def test_training_leaves_its_loader_workers_their_cpus_unless_the_user_set_the_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with torch_threads(4):
        assert [training_threads(w) for w in (0, 1, 3, 8)] == [4, 3, 1, 1]
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        assert training_threads(1) == 4


def test_cpu_vendor_reads_cpuinfo_and_else_what_platform_says(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n")
    assert machine.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    assert machine.cpuinfo_field("model name", str(cpuinfo)) == "AMD EPYC"
    assert machine.cpuinfo_field("flags", str(cpuinfo)) is None
    monkeypatch.setattr(machine.platform, "processor", lambda: "Intel64 Family 6 Model 106 Stepping 6, GenuineIntel")
    assert machine.cpu_vendor(str(tmp_path / "absent")) == "GenuineIntel"
    monkeypatch.setattr(machine.platform, "processor", lambda: "arm")
    assert machine.cpu_vendor(str(tmp_path / "absent")) is None
