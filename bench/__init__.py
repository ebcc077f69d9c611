"""Detection benchmark: scenarios from issue #4, peers as users run them, and an oracle."""
