"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run many times faster on one intra-op thread than on two contended ones; restored after.

    Session-scoped so that module-scoped fixtures (a whole demo run, a trained model) get it too.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
