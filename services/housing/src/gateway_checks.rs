//! Registry checks through the gateway.
