"""jobpulse: live open job offers per category × continent."""
