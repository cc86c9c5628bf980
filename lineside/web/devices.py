"""Device accounts for operator accounts: list, add (the password goes back once), remove.

Operators publish on ``lineside/v1/internal/admin/devices/<operator>`` (only they may: the ACL), so
the topic says who asks; the reply goes to that operator's own inbox. Each change rewrites the
broker's password file and ACL and makes the running broker reload them at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from lineside.bus import Bus, run_forever
from lineside.errors import LinesideError
from lineside.web import handlers
from lineside.web.adapters import Accounts
from lineside.web.settings import WebSettings
from schemas import codec, topics
from schemas.messages import DeviceAddRequest, DeviceRemoveRequest, DevicesInbox, DevicesListRequest, DevicesReply


class DeviceAdmin:
    """Answers the operators' device-account requests, one method per message kind."""

    def __init__(self, settings: WebSettings, accounts: Accounts, log: Any) -> None:
        self.s = settings
        self.accounts = accounts
        self.log = log
        self._decode = codec.decoder(DevicesInbox)
        self._lock = asyncio.Lock()
        """One change at a time: a list that follows an add shows it."""

    async def _listed(self, rid: str, **fields: Any) -> DevicesReply:
        accounts = await asyncio.to_thread(self.accounts.all)
        return DevicesReply(request_id=rid, devices=handlers.device_infos(accounts), **fields)

    async def on_list(self, operator: str, req: DevicesListRequest) -> DevicesReply:
        """The device accounts, by name."""
        return await self._listed(req.request_id)

    async def on_add(self, operator: str, req: DeviceAddRequest) -> DevicesReply:
        """Add a device account and send its password back, once; the broker accepts it at once."""
        try:
            name, line = handlers.check_add(req)
            password = await asyncio.to_thread(self.accounts.add, name, line)
        except LinesideError as exc:
            return await self._listed(req.request_id, name=req.name, error=str(exc))
        note = await self._reload()
        self.log.info("device_added", device=name, line=line, by=operator)  # never the password
        return await self._listed(req.request_id, name=name, password=password, done=True, error=note)

    async def on_remove(self, operator: str, req: DeviceRemoveRequest) -> DevicesReply:
        """Remove a device account; after the broker's reload it is refused and its connection closed."""
        try:
            name = handlers.check_remove(operator, req.name, await asyncio.to_thread(self.accounts.all))
            await asyncio.to_thread(self.accounts.remove, name)
        except LinesideError as exc:
            return await self._listed(req.request_id, name=req.name, error=str(exc))
        note = await self._reload()
        self.log.info("device_removed", device=name, by=operator)
        return await self._listed(req.request_id, name=name, done=True, error=note)

    async def _reload(self) -> str:
        """Make the broker reload; '' when it did, else what the operator should know."""
        try:
            await asyncio.to_thread(self.accounts.reload)
        except LinesideError as exc:
            self.log.warning("broker_not_reloaded", reason=str(exc))
            return f"saved, but the broker has not reloaded the accounts: {exc}"
        return ""

    async def on_message(self, bus: Bus, topic: str, payload: bytes) -> None:
        """Decide one request and reply on the operator's inbox; a bad one gets an error reply."""
        operator = topics.operator_of_admin(topic)
        if operator is None:
            return
        try:
            msg = self._decode.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.warning("bad_request", operator=operator, reason=str(exc))
            reply = DevicesReply(request_id="", error=f"not a device-account request: {exc}")
        else:
            async with self._lock:
                if not handlers.is_operator(operator, await asyncio.to_thread(self.accounts.all)):
                    reply = DevicesReply(request_id=msg.request_id, error=f"{operator} is not an operator account")
                else:
                    match msg:
                        case DevicesListRequest():
                            reply = await self.on_list(operator, msg)
                        case DeviceAddRequest():
                            reply = await self.on_add(operator, msg)
                        case DeviceRemoveRequest():
                            reply = await self.on_remove(operator, msg)
        await bus.publish(topics.reply_inbox(operator), codec.encode(reply))

    async def consume(self, bus: Bus) -> None:
        """Answer requests until cancelled or the connection is lost."""
        async for m in bus.messages():
            await self.on_message(bus, m.topic, m.payload)

    def make_bus(self) -> Bus:
        """The handler's connection as the ``web`` account: the operators' device-account topics."""
        # No retained status: `lineside up` and the tests wait for exactly the four services' statuses.
        return Bus(self.s, client_id=self.s.client_id, subscriptions=(topics.ADMIN_DEVICES_FILTER,))

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""

        def on_error(reason: str, wait: float) -> None:
            self.log.warning("reconnecting", reason=reason, in_s=round(wait, 1))

        await run_forever(self.make_bus, self.consume, on_error)
