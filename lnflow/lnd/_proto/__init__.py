"""Generated protobuf modules for the LND subset (see protos/)."""
