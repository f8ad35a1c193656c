"""A simulated LND node: lnd's gRPC API (TLS + macaroons) driven by a model or a script.

Modules, inside out: ``state`` (channels, policies, forwarding log), ``events``
(HTLC events and their JSON form), ``model`` (the seeded traffic model, pure),
``script`` (the JSONL script format), ``hub`` (fan-out to subscribers),
``server`` (the RPCs), ``runner`` (drives model or script), ``credentials``
(TLS and macaroon files), ``main`` (the ``lnflow-sim`` command).
"""
