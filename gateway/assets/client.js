// The test client page: connect as a user, open or join a conversation, read its history page by
// page, send messages and watch their state, see who types and who comes and goes.
//
// Everything the server or another user sends is rendered with textContent, never as HTML: a
// message is shown exactly as it was typed. The page's Content-Security-Policy forbids inline
// scripts as a second guard.
'use strict';

(() => {
  /** Typing: `isTyping: true` at most this often while the user keeps typing, */
  const TYPING_REPEAT_MS = 1000;
  /** and `isTyping: false` after this long without input. */
  const TYPING_IDLE_MS = 2000;
  /** Another user's indicator disappears after this long without news (their `false` may be lost). */
  const TYPING_SHOWN_MS = 5000;
  const PAGE_SIZE = 20;
  /** The `before` cursor for the newest page: every message id is below it. */
  const NEWEST = Number.MAX_SAFE_INTEGER;
  const LOG_LIMIT = 200;

  const $ = (id) => document.getElementById(id);
  const ui = {
    connectForm: $('connect-form'),
    serverUrl: $('server-url'),
    userId: $('user-id'),
    token: $('token'),
    connect: $('connect'),
    disconnect: $('disconnect'),
    status: $('status'),
    createForm: $('create-form'),
    otherUser: $('other-user'),
    create: $('create'),
    joinForm: $('join-form'),
    conversationId: $('conversation-id'),
    join: $('join'),
    joined: $('joined'),
    loadOlder: $('load-older'),
    messages: $('messages'),
    typing: $('typing'),
    sendForm: $('send-form'),
    message: $('message'),
    send: $('send'),
    presence: $('presence'),
    errors: $('errors'),
    events: $('events'),
  };

  const state = {
    socket: null,
    base: '',
    token: '',
    userId: null,
    /** The conversation joined, and the ids of the oldest and newest message shown. */
    conversationId: null,
    oldestId: null,
    newestId: 0,
    /** Message id → its row. */
    rows: new Map(),
    /** Sends waiting for their outcome, oldest first: `{row, conversationId, content}`. */
    pending: [],
    /** Our own typing: whether `true` was sent, when, and the idle timer. */
    typing: { active: false, sentAt: 0, idleTimer: null },
    /** Other users typing here: user id → the timer that hides them. */
    typers: new Map(),
  };

  // ---- small helpers -------------------------------------------------------------------------

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /** Errors: oldest first, at most LOG_LIMIT. */
  function showError(text) {
    ui.errors.append(element('li', 'error', `${new Date().toLocaleTimeString()} ${text}`));
    while (ui.errors.childElementCount > LOG_LIMIT) ui.errors.firstElementChild.remove();
  }

  function logEvent(name, payload) {
    let shown;
    try {
      shown = JSON.stringify(payload);
    } catch {
      shown = String(payload);
    }
    if (shown && shown.length > 300) shown = `${shown.slice(0, 300)}…`;
    // Newest first, at most LOG_LIMIT.
    ui.events.prepend(element('li', 'event', `${name} ${shown ?? ''}`));
    while (ui.events.childElementCount > LOG_LIMIT) ui.events.lastElementChild.remove();
  }

  function positiveInteger(text) {
    const n = Number(String(text).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  }

  /** The user id a JWT names in `sub`, read without verification (the server verifies it). */
  function userOfToken(token) {
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return positiveInteger(JSON.parse(atob(payload)).sub);
    } catch {
      return null;
    }
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.dataset.state = kind;
  }

  function setConnectedControls(connected) {
    ui.disconnect.disabled = !connected;
    ui.create.disabled = !connected;
    ui.join.disabled = !connected;
    const inConversation = connected && state.conversationId !== null;
    ui.message.disabled = !inConversation;
    ui.send.disabled = !inConversation;
  }

  // ---- REST ----------------------------------------------------------------------------------

  /** Text of a REST error `{statusCode, error, message}` (`message` may list several problems). */
  function describeError(status, body) {
    const message = body && body.message;
    if (Array.isArray(message)) return `${status}: ${message.join(', ')}`;
    if (typeof message === 'string') return `${status}: ${message}`;
    return `HTTP ${status}`;
  }

  async function rest(method, path, body) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (state.token) headers.authorization = `Bearer ${state.token}`;
    const response = await fetch(`${state.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`${method} ${path}: ${describeError(response.status, data)}`);
    return data;
  }

  // ---- messages ------------------------------------------------------------------------------

  function messageRow(own) {
    const row = element('li', own ? 'message own' : 'message');
    row.append(element('span', 'meta'), element('p', 'content'), element('span', 'state'));
    return row;
  }

  function fillRow(row, message) {
    row.dataset.id = String(message.id);
    const time = new Date(message.timestamp);
    const when = Number.isNaN(time.getTime()) ? String(message.timestamp) : time.toLocaleTimeString();
    row.querySelector('.meta').textContent = `#${message.id} · user ${message.sender_id} · ${when}`;
    row.querySelector('.content').textContent = String(message.content);
    state.rows.set(message.id, row);
    state.oldestId = state.oldestId === null ? message.id : Math.min(state.oldestId, message.id);
    state.newestId = Math.max(state.newestId, message.id);
  }

  function setRowState(row, kind, text = kind) {
    row.dataset.state = kind;
    row.querySelector('.state').textContent = text;
  }

  /** Puts a row with an id in id order, before any send still waiting for its outcome. */
  function placeRow(row, id) {
    for (const other of ui.messages.children) {
      if (other === row) continue;
      const waiting = other.dataset.id === undefined && other.dataset.state === 'sending';
      if (waiting || Number(other.dataset.id) > id) {
        ui.messages.insertBefore(row, other);
        return;
      }
    }
    ui.messages.append(row);
  }

  /** The oldest send still waiting whose text matches a stored message of ours, taken off the list. */
  function takePending(message) {
    const i = state.pending.findIndex(
      (p) => p.conversationId === message.conversation_id && p.content === message.content,
    );
    return i < 0 ? null : state.pending.splice(i, 1)[0].row;
  }

  /** A stored message seen for the first time (history or live); none twice. */
  function showStored(message, kind) {
    if (state.rows.has(message.id)) return state.rows.get(message.id);
    const row = messageRow(message.sender_id === state.userId);
    fillRow(row, message);
    setRowState(row, kind);
    placeRow(row, message.id);
    return row;
  }

  function onReceive(message) {
    if (message.conversation_id !== state.conversationId) return;
    hideTyper(message.sender_id);
    if (state.rows.has(message.id)) return;
    // Our own message may come back from the room before its `message-sent`.
    const row = message.sender_id === state.userId ? takePending(message) : null;
    if (row) {
      fillRow(row, message);
      placeRow(row, message.id);
    } else {
      showStored(message, 'received');
    }
    ui.messages.lastElementChild?.scrollIntoView({ block: 'nearest' });
  }

  function onSent(message) {
    // `message-sent` carries no reference to the send: match the oldest pending send of the same
    // text in the same conversation (the server answers a socket's sends in order).
    const row = state.rows.get(message.id) ?? takePending(message);
    if (row) {
      fillRow(row, message);
      placeRow(row, message.id);
      setRowState(row, 'sent');
    } else if (message.conversation_id === state.conversationId) {
      showStored(message, 'sent');
    }
  }

  function onSendError(payload) {
    const error = payload && typeof payload.error === 'string' ? payload.error : 'unknown error';
    const failed = state.pending.shift();
    if (failed) setRowState(failed.row, 'failed', `failed: ${error}`);
    showError(`message-error: ${error}`);
  }

  function send(event) {
    event.preventDefault();
    const content = ui.message.value;
    if (!state.socket || state.conversationId === null || content.trim() === '') return;
    stopTyping();
    const row = messageRow(true);
    row.querySelector('.meta').textContent = `user ${state.userId} · now`;
    row.querySelector('.content').textContent = content;
    setRowState(row, 'sending', 'sending…');
    ui.messages.append(row);
    row.scrollIntoView({ block: 'nearest' });
    state.pending.push({ row, conversationId: state.conversationId, content });
    state.socket.emit('send-message', {
      sender_id: state.userId,
      conversation_id: state.conversationId,
      message_type: 'text',
      content,
    });
    ui.message.value = '';
  }

  // ---- history -------------------------------------------------------------------------------

  async function loadPage(before) {
    const conversationId = state.conversationId;
    ui.loadOlder.disabled = true;
    try {
      const page = await rest(
        'GET',
        `/api/chats/conversations/${conversationId}/messages?before=${before}&limit=${PAGE_SIZE}`,
      );
      if (conversationId !== state.conversationId) return; // another conversation by now
      for (const message of page.data) showStored(message, 'stored');
      const more = page.data.length === PAGE_SIZE;
      ui.loadOlder.disabled = !more;
      ui.loadOlder.textContent = more ? 'Load older messages' : 'No older messages';
    } catch (e) {
      showError(e.message);
      ui.loadOlder.disabled = false;
    }
  }

  function loadOlder() {
    if (state.conversationId !== null) loadPage(state.oldestId ?? NEWEST);
  }

  // ---- conversations -------------------------------------------------------------------------

  async function createConversation(event) {
    event.preventDefault();
    const other = positiveInteger(ui.otherUser.value);
    if (other === null) return showError('Other user ID must be a positive integer');
    try {
      const conversation = await rest('POST', '/api/chats/conversations', {
        sender_id: state.userId,
        receiver_id: other,
      });
      ui.conversationId.value = String(conversation.id);
      await join(conversation.id);
    } catch (e) {
      showError(e.message);
    }
  }

  function resetConversation(conversationId) {
    state.conversationId = conversationId;
    state.oldestId = null;
    state.newestId = 0;
    state.rows.clear();
    state.pending = [];
    for (const timer of state.typers.values()) clearTimeout(timer);
    state.typers.clear();
    renderTypers();
    ui.messages.replaceChildren();
  }

  async function join(conversationId) {
    const socket = state.socket;
    if (!socket) return;
    const previous = state.conversationId;
    if (previous !== null && previous !== conversationId) {
      stopTyping();
      socket.emit('leave-conversation', { conversationId: previous });
    }
    const rejoin = previous === conversationId;
    const payload = { conversationId, userId: state.userId };
    // Back after a lost connection: the server replays what we missed first.
    if (rejoin && state.newestId > 0) payload.lastMessageId = state.newestId;
    let ack;
    try {
      ack = await socket.timeout(10_000).emitWithAck('join-conversation', payload);
    } catch {
      return showError(`join-conversation ${conversationId}: no answer`);
    }
    if (!ack || ack.success !== true) {
      // The server also sends an `error` event with the reason, shown by its handler.
      if (!rejoin) resetConversation(null);
      ui.joined.textContent = '';
      setConnectedControls(socket.connected);
      return;
    }
    ui.joined.textContent = `joined conversation ${conversationId}`;
    if (!rejoin) {
      resetConversation(conversationId);
      await loadPage(NEWEST);
    }
    setConnectedControls(socket.connected);
  }

  function joinFromForm(event) {
    event.preventDefault();
    const id = positiveInteger(ui.conversationId.value);
    if (id === null) return showError('Conversation ID must be a positive integer');
    join(id);
  }

  // ---- typing --------------------------------------------------------------------------------

  function emitTyping(isTyping) {
    if (state.socket && state.conversationId !== null) {
      state.socket.emit('typing', { conversationId: state.conversationId, userId: state.userId, isTyping });
    }
  }

  function onInput() {
    if (state.conversationId === null) return;
    const now = Date.now();
    if (!state.typing.active || now - state.typing.sentAt >= TYPING_REPEAT_MS) {
      emitTyping(true);
      state.typing.active = true;
      state.typing.sentAt = now;
    }
    clearTimeout(state.typing.idleTimer);
    state.typing.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(state.typing.idleTimer);
    if (state.typing.active) emitTyping(false);
    state.typing.active = false;
  }

  function renderTypers() {
    const users = [...state.typers.keys()];
    ui.typing.hidden = users.length === 0;
    ui.typing.textContent =
      users.length === 1 ? `User ${users[0]} is typing…` : `Users ${users.join(', ')} are typing…`;
  }

  function hideTyper(userId) {
    if (!state.typers.has(userId)) return;
    clearTimeout(state.typers.get(userId));
    state.typers.delete(userId);
    renderTypers();
  }

  function onUserTyping(payload) {
    if (!payload || payload.conversationId !== state.conversationId || payload.userId === state.userId) return;
    if (payload.isTyping !== true) return hideTyper(payload.userId);
    clearTimeout(state.typers.get(payload.userId));
    state.typers.set(payload.userId, setTimeout(() => hideTyper(payload.userId), TYPING_SHOWN_MS));
    renderTypers();
  }

  // ---- presence ------------------------------------------------------------------------------

  function onPresence(payload, online) {
    const userId = positiveInteger(payload && payload.userId);
    if (userId === null) return;
    let item = ui.presence.querySelector(`li[data-user="${userId}"]`);
    if (!item) {
      item = element('li', 'contact');
      item.dataset.user = String(userId);
      ui.presence.append(item);
    }
    item.dataset.presence = online ? 'online' : 'offline';
    item.textContent = `User ${userId}: ${online ? 'online' : 'offline'}`;
    if (!online) hideTyper(userId);
  }

  // ---- connection ----------------------------------------------------------------------------

  function disconnect() {
    stopTyping();
    if (state.socket) {
      state.socket.removeAllListeners();
      state.socket.disconnect();
    }
    state.socket = null;
    resetConversation(null);
    ui.joined.textContent = '';
    setStatus('disconnected', 'disconnected');
    setConnectedControls(false);
  }

  function connect(event) {
    event.preventDefault();
    disconnect();
    if (typeof window.io !== 'function') return showError('the Socket.IO client did not load');
    const base = ui.serverUrl.value.trim().replace(/\/+$/, '');
    const token = ui.token.value.trim();
    const userId = positiveInteger(ui.userId.value) ?? (token ? userOfToken(token) : null);
    if (userId === null) {
      return showError(token ? 'User ID is needed: the token has no numeric "sub"' : 'User ID must be a positive integer');
    }
    Object.assign(state, { base, token, userId });
    const socket = window.io(`${base}/chat`, {
      query: ui.userId.value.trim() === '' ? {} : { userId: String(userId) },
      auth: token ? { token } : {},
      transports: ['websocket', 'polling'],
    });
    state.socket = socket;
    setStatus('connecting…', 'connecting');

    socket.onAny((name, payload) => logEvent(name, payload));
    socket.on('connect', () => {
      setStatus(`connected as user ${userId}`, 'connected');
      setConnectedControls(true);
      if (state.conversationId !== null) join(state.conversationId);
    });
    socket.on('disconnect', (reason) => {
      setStatus(`disconnected (${reason})`, 'disconnected');
      setConnectedControls(false);
    });
    socket.on('connect_error', (err) => showError(`connect_error: ${err.message}`));
    socket.on('error', (payload) => showError(`error: ${payload && payload.message}`));
    socket.on('receive-message', onReceive);
    socket.on('message-sent', onSent);
    socket.on('message-error', onSendError);
    socket.on('user-typing', onUserTyping);
    socket.on('user:online', (payload) => onPresence(payload, true));
    socket.on('user:offline', (payload) => onPresence(payload, false));
  }

  // ---- wiring --------------------------------------------------------------------------------

  ui.serverUrl.value = /^https?:$/.test(location.protocol) ? location.origin : 'http://localhost:3000';
  ui.connectForm.addEventListener('submit', connect);
  ui.disconnect.addEventListener('click', disconnect);
  ui.createForm.addEventListener('submit', createConversation);
  ui.joinForm.addEventListener('submit', joinFromForm);
  ui.loadOlder.addEventListener('click', loadOlder);
  ui.sendForm.addEventListener('submit', send);
  ui.message.addEventListener('input', onInput);
  ui.message.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) send(event);
  });
  document.body.dataset.ready = 'true';
})();
