"""The wire contract shared by the doorbell and the relay."""
