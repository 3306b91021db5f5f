"""The data plane: transports, TCP/UDP forwarders, the worker process and its peer, the receiver."""
