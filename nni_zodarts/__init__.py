"""nni-zodarts: ZO-DARTS++ (zeroth-order DARTS, tempered sparsemax, parameter budgets) for Microsoft NNI."""
from .nni_workarounds import quiet_nni_warnings

quiet_nni_warnings()

from .budget import hinge_penalty  # noqa: E402
from .cost_model import ParamPolynomial  # noqa: E402
from .distributed import ZODartsDDP  # noqa: E402
from .module import ZOConfig, ZODartsPPModule  # noqa: E402
from .sparsemax import TemperedSoftmax, TemperedSparsemax, sparsemax, temperature_at  # noqa: E402
from .strategy import ZODartsPP  # noqa: E402

__version__ = '0.1.0'
__all__ = ['ZODartsPP', 'ZODartsDDP', 'ZODartsPPModule', 'ZOConfig', 'ParamPolynomial', 'hinge_penalty', 'sparsemax',
           'TemperedSparsemax', 'TemperedSoftmax', 'temperature_at']
