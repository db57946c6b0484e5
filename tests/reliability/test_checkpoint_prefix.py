"""``TrainableParamsCheckPoint(prefix=<not a str>)`` is a ValueError, as in ``ModelCheckpoint`` (issue 19)."""
import pytest

from mindpet.graph import TrainableParamsCheckPoint

@pytest.mark.parametrize("prefix", [0, None, b"DELTA", ["x"]])
def test_checkpoint_prefix_not_a_str_is_a_value_error(tmp_path, prefix):
    with pytest.raises(ValueError, match="prefix"):
        TrainableParamsCheckPoint(str(tmp_path), prefix=prefix)
