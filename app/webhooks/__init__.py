"""Signed webhooks: subscriptions, their outbox of deliveries, and the sender."""
