"""asyncio client for the Bloomreach Engagement Tracking API."""

from ._auth import PrivateKey as PrivateKey, PublicToken as PublicToken
