"""
The C{twistd dmq} plugin: run a node of a Kamailio-compatible DMQ bus.
"""

from twisted.application.service import ServiceMaker

dmq = ServiceMaker("dmq", "dmq.tap", "Run a node of a Kamailio-compatible DMQ (KDMQ) bus.", "dmq")
