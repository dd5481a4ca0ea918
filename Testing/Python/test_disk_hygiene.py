"""The test run cleans up after itself: CI's disk is shared by every run, and leftovers once filled it."""

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def test_the_scratch_model_cache_is_removed_when_the_run_ends():
    script = ("import runpy, pathlib; ns = runpy.run_path(%r); "
              "cache = pathlib.Path(ns['SCRATCH_CACHE']); (cache / 'model.xml').write_text('converted'); "
              "print(cache)") % str(CONFTEST)
    env = {key: value for key, value in os.environ.items() if key != "MEDIAN_NERVE_SEG_CACHE"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    cache = Path(done.stdout.strip())
    assert cache.name.startswith("mns-cache-")
    assert not cache.exists()


def test_a_passing_tests_tmp_path_is_not_kept(pytestconfig):
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
