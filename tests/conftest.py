import pytest

from training_helpers import make_small_data


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("train_data"))
