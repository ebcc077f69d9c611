"""Fleet mode's forwarder: an agent that validates, enriches and buffers its records, then ships them
to a gateway agent (docs/fleet.md).

``enrich`` (pod identity, computed proxies, time), ``client`` (one POST and what its answer means),
``forwarder`` (ingest into the durable buffer, the send step), ``metrics`` (the series and the view a
scrape reads). The buffer's SQL is in agent/store/forward.py.
"""

from agent.forward.client import SEND_FAILURE_REASONS, GatewayClient, Outcome, setting_problems
from agent.forward.enrich import Enricher, identity_from_env
from agent.forward.forwarder import DROP_REASONS, Forwarder
from agent.forward.metrics import ForwarderView

__all__ = ["DROP_REASONS", "SEND_FAILURE_REASONS", "Enricher", "Forwarder", "ForwarderView", "GatewayClient",
           "Outcome", "identity_from_env", "setting_problems"]
