import pytest

from training.data import DataConfig, load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DataConfig(name="digits"))


@pytest.fixture(scope="session")
def mnist1d():
    return load_dataset(DataConfig(name="mnist1d", num_samples=600))


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run tiny tensors on a shared machine: thread contention costs far more than it gains."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
