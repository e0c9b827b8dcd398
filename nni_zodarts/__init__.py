"""nni-zodarts: ZO-DARTS++ (zeroth-order DARTS, tempered sparsemax, parameter budgets) for Microsoft NNI."""
from .nni_workarounds import importing_nni, quiet_nni

with importing_nni():                   # NNI's import-time warnings, for this import only: no global state changes
    from .budget import hinge_penalty
    from .cost_model import ParamPolynomial
    from .distributed import ZODartsDDP
    from .module import ZOConfig, ZODartsPPModule
    from .sparsemax import TemperedSoftmax, TemperedSparsemax, sparsemax, temperature_at
    from .strategy import ZODartsPP

__version__ = '0.1.0'
__all__ = ['ZODartsPP', 'quiet_nni', 'ZODartsDDP', 'ZODartsPPModule', 'ZOConfig', 'ParamPolynomial', 'hinge_penalty', 'sparsemax',
           'TemperedSparsemax', 'TemperedSoftmax', 'temperature_at']
