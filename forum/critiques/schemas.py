from __future__ import annotations

from uuid import UUID

import msgspec


class CritiqueLinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    critique_id: UUID
