"""The cloud relay: indexes clip metadata and brokers owner-approved releases."""
