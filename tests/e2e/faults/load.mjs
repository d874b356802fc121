// Steady message load for the fault-injection tests, from clients that behave like a robust
// real client, and the checks of what they saw against the database.
//
// A `Load` is K conversations, each between two fresh users whose sockets start on different
// gateways (user id parity picks the gateway; see harness/server.mjs). Every user's `LoadClient`:
//   - joins its conversation before the load starts, then sends a message every 40–60 ms with a
//     fresh `client_msg_id` and a content `<tag>:<sender>:<seq>:<client_msg_id>`, so that a
//     message stored twice is recognisable in the database;
//   - keeps every send without `message-sent` and sends it again, with the SAME client_msg_id,
//     after a `message-error` (which names no send: it is charged to the oldest send still in
//     flight; a wrong guess only costs an idempotent resend) with a growing back-off, after
//     RESEND_AFTER_MS without an answer, and after reconnecting;
//   - on a disconnect it did not ask for (its gateway died), connects to the other gateway
//     (alternating while connecting fails), rejoins with `lastMessageId` = the highest id it has
//     received, and resends its unconfirmed sends;
//   - records every `receive-message` in arrival order, every `message-sent`, every
//     `message-error`, and the presence events it gets.
// `Load.verify()` then reads the database (the harness's psql, on the test database) and
// counts what the fault tests assert on: lost, duplicated, unacknowledged, missing deliveries, …

import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { psql, safeJson } from '../harness.mjs';

/** A send without an answer for this long is sent again (same client_msg_id). */
export const RESEND_AFTER_MS = 4000;
/** First delay before resending after a `message-error`; doubles per error, up to RESEND_AFTER_MS. */
const ERROR_BACKOFF_MS = 300;
const CONNECT_TIMEOUT_MS = 5000;
const JOIN_TIMEOUT_MS = 5000;
/** Most sends one client (re)emits per retry tick (every RETRY_TICK_MS). */
const RESEND_BUDGET = 64;
const RETRY_TICK_MS = 100;

/** The content of a load message: who sent it, its sequence number, its client_msg_id. */
export const contentOf = (tag, sender, seq, cmid) => `${tag}:${sender}:${seq}:${cmid}`;

export function parseContent(content) {
  const m = /^([A-Za-z0-9_-]+):(\d+):(\d+):([0-9a-f-]{36})$/.exec(content ?? '');
  return m ? { tag: m[1], sender: Number(m[2]), seq: Number(m[3]), cmid: m[4] } : null;
}

export class LoadClient {
  constructor(srv, { userId, peerId, conversationId, gateway, tag }) {
    Object.assign(this, { srv, userId, peerId, conversationId, gateway, tag });
    this.socket = null;
    this.joined = false;
    this.everJoined = false;
    this.closed = false;
    this.reconnecting = false;
    /** While true, a lost connection is not re-established (a test sets it back to false). */
    this.holdReconnect = false;
    this.seq = 0;
    this.items = new Map(); // client_msg_id → send (all of them)
    this.pending = new Map(); // client_msg_id → send without message-sent yet
    this.acked = new Map(); // client_msg_id → message id of its first message-sent
    this.ackRepeats = 0; // message-sent again for an acknowledged send (a retry's answer)
    this.ackMismatch = []; // the same client_msg_id confirmed with two different ids
    this.strayAcks = []; // message-sent for nothing this client sent
    this.resends = 0;
    this.errors = new Map(); // message-error text → count
    this.errorLog = []; // { at, text, charged: seq of the send it was charged to }
    this.received = []; // every receive-message id, in arrival order
    this.receivedSet = new Set();
    this.receivedContent = new Map(); // id → content
    this.maxReceived = 0;
    this.repeats = 0; // receive-message of an id received before
    this.pagedIn = 0; // messages read from history because the server asked (catchUp)
    this.outOfOrder = []; // a new id below the highest received so far
    this.foreign = []; // receive-message of another conversation
    this.presence = []; // { name, userId, at }
    this.serverErrors = []; // `error` events: { message, at }
    this.connects = []; // { gateway, at }
    this.disconnects = []; // { gateway, reason, at }
    this.joinFailures = [];
    this.sending = false;
    this.sendLoop = null;
    this.ticker = null;
  }

  get label() {
    return `user ${this.userId} (conversation ${this.conversationId})`;
  }

  get connected() {
    return this.socket !== null && this.socket.connected && this.joined;
  }

  /** Connects to its first gateway and joins; throws if that fails. */
  async start() {
    if (!(await this.connectAndJoin())) {
      throw new Error(`${this.label}: could not connect and join on gateway ${this.gateway}`);
    }
  }

  /** One attempt: connect to `this.gateway`, join (replaying after the last id received once
   * joined before), resend what is unconfirmed. False when the connection failed or was lost. */
  async connectAndJoin() {
    const s = this.srv.socket({ userId: this.userId }, { gateway: this.gateway });
    s.__label = `${s.__label} [load ${this.tag}]`;
    const connected = await new Promise((resolve) => {
      const timer = setTimeout(() => done(false), CONNECT_TIMEOUT_MS);
      const ok = () => done(true);
      const fail = () => done(false);
      function done(v) {
        clearTimeout(timer);
        s.off('connect', ok);
        s.off('connect_error', fail);
        resolve(v);
      }
      s.on('connect', ok);
      s.on('connect_error', fail);
    });
    if (!connected || this.closed) {
      s.removeAllListeners();
      s.disconnect();
      return false;
    }
    this.attach(s);
    this.socket = s;
    this.connects.push({ gateway: this.gateway, at: Date.now() });
    const payload = this.everJoined
      ? { conversationId: this.conversationId, lastMessageId: this.maxReceived }
      : { conversationId: this.conversationId };
    while (s.connected && !this.closed) {
      try {
        const ack = await s.timeout(JOIN_TIMEOUT_MS).emitWithAck('join-conversation', payload);
        if (ack?.success === true) break;
        this.joinFailures.push({ at: Date.now(), why: safeJson(ack) });
      } catch (err) {
        this.joinFailures.push({ at: Date.now(), why: err.message });
      }
      await sleep(300);
    }
    if (!s.connected || this.socket !== s || this.closed) return false;
    this.joined = true;
    this.everJoined = true;
    for (const item of this.pending.values()) this.emitSend(item);
    return true;
  }

  attach(s) {
    s.on('receive-message', (m) => this.onReceive(m));
    s.on('message-sent', (m) => this.onSent(m));
    s.on('message-error', (e) => this.onError(e));
    s.on('error', (e) => {
      const message = e?.message ?? safeJson(e);
      this.serverErrors.push({ message, at: Date.now() });
      // A replay that failed or stopped short names the history page to fetch instead.
      const page = /GET (\/api\/chats\/conversations\/\d+\/messages\?after=\d+)/.exec(String(message));
      if (page) this.catchUp(page[1]).catch((err) => this.serverErrors.push({ message: `catch-up failed: ${err.message}`, at: Date.now() }));
    });
    for (const name of ['user:online', 'user:offline']) {
      s.on(name, (p) => this.presence.push({ name, userId: p?.userId, at: Date.now() }));
    }
    s.on('disconnect', (reason) => {
      if (this.socket !== s) return;
      this.socket = null;
      this.joined = false;
      this.disconnects.push({ gateway: this.gateway, reason, at: Date.now() });
      for (const item of this.pending.values()) item.inFlight = false;
      if (!this.closed) this.reconnect();
    });
  }

  /** Reconnects to the other gateway (alternating while that fails) until joined again. */
  async reconnect() {
    if (this.reconnecting) return;
    this.reconnecting = true;
    try {
      let delay = 200;
      while (!this.closed) {
        while (this.holdReconnect && !this.closed) await sleep(20);
        if (this.closed) break;
        this.gateway = 1 - this.gateway;
        if (await this.connectAndJoin()) break;
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    } finally {
      this.reconnecting = false;
    }
  }

  /** Pages through history from `path` (`…/messages?after=<id>`), as the server asked. */
  async catchUp(path) {
    let url = path;
    for (;;) {
      const res = await this.srv.api('GET', `${url}&limit=100`, undefined, { gateway: this.gateway });
      if (res.status !== 200) throw new Error(`GET ${url} → ${res.status} ${safeJson(res.body)}`);
      const data = res.body.data ?? [];
      for (const m of data) this.onReceive(m, true);
      if (data.length < 100) return;
      url = url.replace(/after=\d+/, `after=${data[data.length - 1].id}`);
    }
  }

  /** A message received live or by replay; or, `paged`, read from history by catchUp(). */
  onReceive(m, paged = false) {
    if (m?.conversation_id !== this.conversationId) {
      this.foreign.push(m?.id);
      return;
    }
    if (paged) this.pagedIn++;
    else this.received.push(m.id);
    if (this.receivedSet.has(m.id)) {
      if (!paged) this.repeats++;
      return;
    }
    // Paging fills in what the server could not replay, which may be below ids received since.
    if (m.id < this.maxReceived && !paged) this.outOfOrder.push({ id: m.id, after: this.maxReceived });
    this.receivedSet.add(m.id);
    this.receivedContent.set(m.id, m.content);
    if (m.id > this.maxReceived) this.maxReceived = m.id;
  }

  onSent(m) {
    const parsed = parseContent(m?.content);
    if (!parsed || parsed.sender !== this.userId || !this.items.has(parsed.cmid)) {
      this.strayAcks.push(m);
      return;
    }
    const first = this.acked.get(parsed.cmid);
    if (first !== undefined) {
      this.ackRepeats++;
      if (first !== m.id) this.ackMismatch.push({ cmid: parsed.cmid, first, again: m.id });
      return;
    }
    this.acked.set(parsed.cmid, m.id);
    const item = this.pending.get(parsed.cmid);
    this.pending.delete(parsed.cmid);
    if (item) {
      item.ackedAt = Date.now();
      item.history.push(['ack', item.ackedAt]);
    }
  }

  onError(e) {
    const text = String(e?.error ?? safeJson(e));
    this.errors.set(text, (this.errors.get(text) ?? 0) + 1);
    let oldest = null;
    for (const item of this.pending.values()) {
      if (item.inFlight && (oldest === null || item.lastSentAt < oldest.lastSentAt)) oldest = item;
    }
    this.errorLog.push({ at: Date.now(), text, charged: oldest?.seq ?? null });
    if (oldest) {
      oldest.history.push(['error', Date.now()]);
      oldest.inFlight = false;
      oldest.errorAt = Date.now();
      oldest.errorCount++;
    }
  }

  emitSend(item) {
    const s = this.socket;
    if (s === null || !s.connected) return false;
    item.attempts++;
    if (item.attempts > 1) this.resends++;
    item.history.push(['send', Date.now()]);
    item.lastSentAt = Date.now();
    item.inFlight = true;
    s.emit('send-message', {
      sender_id: this.userId,
      conversation_id: this.conversationId,
      message_type: 'text',
      content: item.content,
      client_msg_id: item.cmid,
    });
    return true;
  }

  newSend() {
    const cmid = randomUUID();
    const seq = ++this.seq;
    const item = {
      cmid, seq, content: contentOf(this.tag, this.userId, seq, cmid),
      createdAt: Date.now(), attempts: 0, lastSentAt: 0, inFlight: false, errorAt: 0, errorCount: 0, ackedAt: 0,
      history: [], // [what, when]: 'send', 'error' (charged to it), 'ack'
    };
    this.items.set(cmid, item);
    this.pending.set(cmid, item);
    this.emitSend(item);
  }

  /** Resends what is due: never sent, unanswered for RESEND_AFTER_MS, or errored (back-off). */
  retryDue() {
    if (this.socket === null || !this.socket.connected) return;
    const now = Date.now();
    let budget = RESEND_BUDGET;
    for (const item of this.pending.values()) {
      if (budget <= 0) break;
      let due;
      if (item.lastSentAt === 0) due = true;
      else if (item.inFlight) due = now - item.lastSentAt >= RESEND_AFTER_MS;
      else due = now - item.errorAt >= Math.min(ERROR_BACKOFF_MS * 2 ** Math.max(0, item.errorCount - 1), RESEND_AFTER_MS);
      if (due && this.emitSend(item)) budget--;
    }
  }

  startSending(minMs = 40, maxMs = 60) {
    this.sending = true;
    this.ticker = setInterval(() => this.retryDue(), RETRY_TICK_MS);
    this.sendLoop = (async () => {
      while (this.sending && !this.closed) {
        this.newSend();
        await sleep(minMs + Math.random() * (maxMs - minMs));
      }
    })();
  }

  /** No new messages from now on (retries go on until close()). */
  async stopSending() {
    this.sending = false;
    await this.sendLoop;
  }

  close() {
    this.closed = true;
    this.sending = false;
    clearInterval(this.ticker);
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.removeAllListeners();
      s.disconnect();
    }
  }

  /** Presence events about `userId` since `since` (ms timestamp), as [name, …]. */
  presenceAbout(userId, since = 0) {
    return this.presence.filter((e) => e.userId === userId && e.at >= since).map((e) => e.name);
  }
}

/** Rows of `messages` matching `where`, read with psql as JSON, in id order. */
export async function messageRows(dbName, where) {
  const sql = 'select coalesce(jsonb_agg(jsonb_build_array(id, conversation_id, sender_id, content, dedup_key, message_type, ' +
    '(extract(epoch from created_at) * 1000)::bigint) order by id), \'[]\'::jsonb) ' +
    `from messages where ${where}`;
  const res = await psql(sql, { database: dbName, timeoutMs: 30_000 });
  if (!res.ok) throw new Error(`psql on ${dbName} failed: ${res.stderr.trim()}`);
  return JSON.parse(res.stdout.trim()).map(([id, conversationId, senderId, content, dedupKey, messageType, createdAt]) => ({
    id: Number(id), conversationId: Number(conversationId), senderId: Number(senderId), content, dedupKey, messageType,
    createdAt: Number(createdAt),
  }));
}

export class Load {
  constructor(srv, tag, clients) {
    Object.assign(this, { srv, tag, clients });
    this.startedAt = 0;
    this.stoppedAt = 0;
    this.conversationIds = [...new Set(clients.map((c) => c.conversationId))];
  }

  /** `pairs` conversations of two fresh users each (on different gateways), all joined. */
  static async create(srv, { pairs = 4, tag }) {
    const clients = [];
    for (let i = 0; i < pairs; i++) {
      const [a, b] = srv.users(2);
      const conv = await srv.openConversation(a, b);
      clients.push(new LoadClient(srv, { userId: a, peerId: b, conversationId: conv.id, gateway: srv.gatewayOf(a), tag }));
      clients.push(new LoadClient(srv, { userId: b, peerId: a, conversationId: conv.id, gateway: srv.gatewayOf(b), tag }));
    }
    const load = new Load(srv, tag, clients);
    try {
      await Promise.all(clients.map((c) => c.start()));
    } catch (err) {
      load.close();
      throw err;
    }
    return load;
  }

  start() {
    this.startedAt = Date.now();
    for (const c of this.clients) c.startSending();
  }

  async stop() {
    await Promise.all(this.clients.map((c) => c.stopSending()));
    this.stoppedAt = Date.now();
  }

  close() {
    for (const c of this.clients) c.close();
  }

  get pendingCount() {
    return this.clients.reduce((n, c) => n + c.pending.size, 0);
  }

  /** Waits (bounded) until every send is acknowledged; the number still unacknowledged. */
  async waitAcked(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (this.pendingCount > 0 && Date.now() < deadline) await sleep(100);
    return this.pendingCount;
  }

  /** Waits (bounded) until every client holds every stored id of its conversation. */
  async waitDelivered(rows, timeoutMs) {
    const idsOf = this.idsByConversation(rows);
    const deadline = Date.now() + timeoutMs;
    const missing = () => this.clients.reduce(
      (n, c) => n + (idsOf.get(c.conversationId) ?? []).filter((id) => !c.receivedSet.has(id)).length, 0,
    );
    while (missing() > 0 && Date.now() < deadline) await sleep(100);
    return missing();
  }

  /** What is known of a stored message: its row, its neighbours, and its sender's send history (ms from the load start). */
  describe(row, rows) {
    if (!row) return 'no row';
    const t = (at) => (at ? at - this.startedAt : null);
    const p = parseContent(row.content);
    const sender = this.clients.find((c) => c.userId === row.senderId);
    const item = p && sender ? sender.items.get(p.cmid) : undefined;
    const same = rows.filter((r) => r.conversationId === row.conversationId);
    const at = same.findIndex((r) => r.id === row.id);
    const near = same.slice(Math.max(0, at - 2), at + 3).map((r) => `${r.id}@${t(r.createdAt)}`);
    return safeJson({
      created: t(row.createdAt), content: row.content, neighbours: near,
      send: item && { created: t(item.createdAt), attempts: item.attempts, acked: t(item.ackedAt), history: item.history.map(([w, when]) => `${w}@${t(when)}`) },
    });
  }

  idsByConversation(rows) {
    const idsOf = new Map(this.conversationIds.map((id) => [id, []]));
    for (const r of rows) idsOf.get(r.conversationId)?.push(r.id);
    return idsOf;
  }

  rows() {
    return messageRows(this.srv.dbName, `conversation_id in (${this.conversationIds.join(',')})`);
  }

  /**
   * Compares what the clients saw with the database. Returns the summary row and the
   * problems found (each a short text with examples).
   */
  async verify() {
    const rows = await this.rows();
    const problems = [];
    const byKey = new Map(); // "sender:seq" → rows
    const byDedup = new Map(); // dedup_key → row
    const strange = [];
    for (const r of rows) {
      const p = parseContent(r.content);
      if (!p || p.tag !== this.tag || p.sender !== r.senderId) {
        strange.push(r);
        continue;
      }
      const key = `${p.sender}:${p.seq}`;
      byKey.set(key, [...(byKey.get(key) ?? []), r]);
      if (r.dedupKey !== `c:${p.cmid}`) strange.push(r);
      byDedup.set(r.dedupKey, r);
    }
    const dupGroups = [...byKey.values()].filter((g) => g.length > 1);
    const duplicated = dupGroups.reduce((n, g) => n + g.length - 1, 0);
    if (duplicated > 0) {
      problems.push(`duplicated: ${duplicated} extra rows, e.g. ${safeJson(dupGroups.slice(0, 3).map((g) => g.map((r) => [r.id, r.content])))}`);
    }
    if (strange.length > 0) {
      problems.push(`${strange.length} rows that no load client sent (or with a wrong dedup key): ${safeJson(strange.slice(0, 3))}`);
    }

    let sent = 0;
    let acked = 0;
    const lost = [];
    const wrongId = [];
    const unacked = [];
    const ackMismatch = [];
    const stray = [];
    let resends = 0;
    let errors = 0;
    const errorTexts = new Map();
    for (const c of this.clients) {
      sent += c.items.size;
      acked += c.acked.size;
      resends += c.resends;
      for (const [text, n] of c.errors) {
        errors += n;
        errorTexts.set(text, (errorTexts.get(text) ?? 0) + n);
      }
      for (const [cmid, id] of c.acked) {
        const row = byDedup.get(`c:${cmid}`);
        if (!row) lost.push({ user: c.userId, cmid, id });
        else if (row.id !== id) wrongId.push({ user: c.userId, cmid, acked: id, stored: row.id });
      }
      for (const item of c.pending.values()) {
        const row = byDedup.get(`c:${item.cmid}`);
        unacked.push({ user: c.userId, seq: item.seq, attempts: item.attempts, stored: row ? row.id : null });
      }
      ackMismatch.push(...c.ackMismatch.map((m) => ({ user: c.userId, ...m })));
      stray.push(...c.strayAcks.map((m) => ({ user: c.userId, id: m?.id, content: m?.content })));
    }
    if (lost.length > 0) problems.push(`lost: ${lost.length} acknowledged messages not in the database, e.g. ${safeJson(lost.slice(0, 5))}`);
    if (wrongId.length > 0) problems.push(`${wrongId.length} acknowledged with an id other than the stored one: ${safeJson(wrongId.slice(0, 5))}`);
    if (ackMismatch.length > 0) problems.push(`${ackMismatch.length} sends confirmed with two different ids: ${safeJson(ackMismatch.slice(0, 5))}`);
    if (stray.length > 0) problems.push(`${stray.length} message-sent for nothing the client sent: ${safeJson(stray.slice(0, 3))}`);
    if (unacked.length > 0) {
      const stored = unacked.filter((u) => u.stored !== null).length;
      problems.push(`${unacked.length} sends never acknowledged (${stored} of them stored), e.g. ${safeJson(unacked.slice(0, 5))}`);
    }

    const idsOf = this.idsByConversation(rows);
    const contentOfId = new Map(rows.map((r) => [r.id, r.content]));
    let delivered = 0;
    let expected = 0;
    let repeats = 0;
    let missingTotal = 0;
    for (const c of this.clients) {
      const ids = idsOf.get(c.conversationId) ?? [];
      expected += ids.length;
      const stored = new Set(ids);
      const missing = ids.filter((id) => !c.receivedSet.has(id));
      const phantom = [...c.receivedSet].filter((id) => !stored.has(id));
      const wrongContent = [...c.receivedContent].filter(([id, content]) => stored.has(id) && contentOfId.get(id) !== content);
      delivered += ids.length - missing.length;
      repeats += c.repeats;
      missingTotal += missing.length;
      if (missing.length > 0) {
        problems.push(`${c.label}: ${missing.length} stored messages never received (gap), e.g. ids ${missing.slice(0, 8).join(', ')}; it received up to ${c.maxReceived}; connects ${safeJson(c.connects.map((x) => x.gateway))}`);
        for (const id of missing.slice(0, 3)) problems.push(`  message ${id}: ${this.describe(rows.find((r) => r.id === id), rows)}`);
      }
      if (phantom.length > 0) problems.push(`${c.label}: received ids not stored in its conversation: ${phantom.slice(0, 8).join(', ')}`);
      if (c.outOfOrder.length > 0) problems.push(`${c.label}: ${c.outOfOrder.length} new ids arrived below the highest already received, e.g. ${safeJson(c.outOfOrder.slice(0, 5))}`);
      if (c.foreign.length > 0) problems.push(`${c.label}: ${c.foreign.length} receive-message of other conversations: ${c.foreign.slice(0, 5).join(', ')}`);
      if (wrongContent.length > 0) problems.push(`${c.label}: ${wrongContent.length} received with a content other than the stored one: ${safeJson(wrongContent.slice(0, 3))}`);
    }
    const reconnects = this.clients.reduce((n, c) => n + c.connects.length - 1, 0);
    const row = {
      sent, acknowledged: acked, stored: rows.length, delivered: `${delivered}/${expected}`,
      lost: lost.length, duplicated, reordered: this.clients.reduce((n, c) => n + c.outOfOrder.length, 0),
      unacked: unacked.length, missing: missingTotal, repeats,
      errors, resends, reconnects,
    };
    // Informational: `error` events (a replay that failed, a refused join), failed joins, paging.
    const notes = {
      errorEvents: this.clients.flatMap((c) => c.serverErrors.map((e) => `${c.userId}: ${e.message}`)).slice(0, 10),
      joinFailures: this.clients.flatMap((c) => c.joinFailures.map((f) => `${c.userId}: ${f.why}`)).slice(0, 10),
      pagedIn: this.clients.reduce((n, c) => n + c.pagedIn, 0),
    };
    return { row, problems, errorTexts, rows, notes };
  }
}
