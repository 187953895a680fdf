"""The personalization gateway: one GraphQL Customer over CRM, commerce and analytics."""

__version__ = "0.1.0"
