"""cycles-otel: OpenTelemetry observability and budget gating for Cycles-governed AutoGen agents.

(The full manual is assembled here as the package grows.)
"""

from cycles_otel.cardinality import CardinalityGuard
from cycles_otel.instrumentor import CyclesInstrumentor
from cycles_otel.instruments import Instruments, get_instruments
from cycles_otel.version import __version__

__all__ = ["CardinalityGuard", "CyclesInstrumentor", "Instruments", "__version__", "get_instruments"]
