"""The published baselines of Table 2 on the shared backbone, training loop and metrics.

Importing this package registers each method in `ihas.variants.METHODS`, so `run_pipeline` runs it
when `config.variant` names it: `pep`, `autofield`, `optembed`, `adafs-soft`, `adafs-hard`, `optfs`.
Each method's own settings are in `ihas.baselines.config`.
"""

from ihas.baselines.adafs import run_adafs_hard, run_adafs_soft
from ihas.baselines.autofield import run_autofield
from ihas.baselines.optembed import run_optembed
from ihas.baselines.optfs import run_optfs
from ihas.baselines.pep import run_pep

BASELINES = ("pep", "autofield", "optembed", "adafs-soft", "adafs-hard", "optfs")

__all__ = ["BASELINES", "run_adafs_hard", "run_adafs_soft", "run_autofield", "run_optembed", "run_optfs", "run_pep"]
