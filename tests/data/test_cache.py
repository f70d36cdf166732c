"""The decoded-clip cache: a memory-mapped split crosses into a spawned loader worker by its file name."""

import pickle

import numpy as np
import torch
from torch.utils.data import DataLoader

from speechrnn.data.datamodule import ClipDataset, SpeechCommandsData


def training_split(tone_folder, tmp_path):
    data = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4)
    data.setup()
    return data.splits["training"]


def test_a_pickled_split_is_its_file_name_and_maps_the_same_clips_again(tone_folder, tmp_path):
    split = training_split(tone_folder, tmp_path)
    blob = pickle.dumps(ClipDataset(split))
    assert len(blob) < split.waves.nbytes / 4  # the clips' bytes stayed behind
    again = pickle.loads(blob).clips
    assert isinstance(again.waves, np.memmap) and again.npy == split.npy
    np.testing.assert_array_equal(again.waves, split.waves)
    assert again.paths == split.paths and (again.labels == split.labels).all()


def test_a_spawned_loader_worker_reads_the_same_items_as_the_main_process(tone_folder, tmp_path):
    dataset = ClipDataset(training_split(tone_folder, tmp_path))
    spawned = DataLoader(dataset, batch_size=8, num_workers=1, multiprocessing_context="spawn")
    for (wave, label, index), (w, l, i) in zip(spawned, DataLoader(dataset, batch_size=8)):
        assert torch.equal(wave, w) and torch.equal(label, l) and torch.equal(index, i)
