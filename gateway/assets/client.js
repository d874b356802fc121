// The test client page: connect as a user, open or join a conversation, read its history page by
// page, send messages and watch their state, see who types and who comes and goes, see the
// inbox (conversations with their unread counts) and, on one's own messages, ticks for what the
// other member got (one) and read (two). Groups: create one, add and remove members, give the
// moderator role, leave; membership changes show as lines among the messages. Each stored message
// has small controls: edit (one's own text messages), delete (one's own; in a group any message
// for its owner and moderators), and reactions (a few fixed emojis, and any other one used, with
// their counts; a click toggles one's own). Edits show "(edited)", a deleted message stays as a
// "message deleted" tombstone without controls.
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
  /** How long a receipt (`mark-delivered`, `mark-read`) may wait for its acknowledgement. */
  const ACK_TIMEOUT_MS = 10_000;
  const INBOX_PAGE_SIZE = 50;
  /** A burst of events (a replay, a busy conversation) refreshes the inbox once, this long after the last. */
  const INBOX_DEBOUNCE_MS = 300;
  /**
   * No event reaches a socket about conversations it has not joined, so a message there shows
   * up in the inbox only by asking: every this often while the tab is visible (and on Refresh).
   */
  const INBOX_POLL_MS = 15_000;
  /** Tick marks by receipt: what the other member did with one of our messages. */
  const TICKS = { none: '', delivered: '\u2713', read: '\u2713\u2713' };
  const TICK_TITLES = { none: '', delivered: 'delivered', read: 'read' };
  /** The reactions offered on every message (👍 ❤️ 😂); others' other emojis show too, with their counts. */
  const QUICK_REACTIONS = ['\u{1F44D}', '\u2764\uFE0F', '\u{1F602}'];
  /** What a tombstone shows in place of the content. */
  const DELETED_TEXT = 'message deleted';
  /** Roles that may delete anyone's message in a group. */
  const MODERATING_ROLES = new Set(['owner', 'moderator']);

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
    groupForm: $('group-form'),
    groupName: $('group-name'),
    groupMembers: $('group-members'),
    createGroup: $('create-group'),
    membersPanel: $('members-panel'),
    membersForm: $('members-form'),
    memberId: $('member-id'),
    memberRole: $('member-role'),
    removeMember: $('remove-member'),
    setRole: $('set-role'),
    leaveGroup: $('leave-group'),
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
    inbox: $('inbox'),
    totalUnread: $('total-unread'),
    inboxRefresh: $('inbox-refresh'),
    inboxMore: $('inbox-more'),
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
    /**
     * The other member's positions in the open conversation (a conversation has two members):
     * the newest message id they got, and read. Events and inbox pages may arrive in any order,
     * so a position only ever moves forward here, as on the server.
     */
    peer: { delivered: 0, read: 0 },
    /** The newest message id of the open conversation we asked to mark read. */
    readRequested: 0,
    /** Conversation id → the newest message id we asked to mark delivered there. */
    deliveredRequested: new Map(),
    /**
     * The inbox: the entries shown (conversation id → entry), the cursor of the next page, the
     * number of the latest load (an older load's answer is dropped), and the timers.
     */
    inbox: { entries: new Map(), next: null, seq: 0, debounce: null, poll: null },
    /** Groups this page knows of (created here, or seen in the inbox): id → name. */
    groups: new Map(),
    /**
     * Group id → (user id → role), from the group's creation here, the inbox and membership
     * events: it tells whether we may delete others' messages in the open group.
     */
    roles: new Map(),
    /**
     * Message id (open conversation) → its reactions: `counts` ({emoji: total}), `mine` (the
     * emojis we added) and `events` (how many updates came, so that a `react` acknowledgement
     * overtaken by a newer event does not put older counts back).
     */
    reactions: new Map(),
    /** Membership events seen: roles in an inbox page asked for before the latest one are stale. */
    roleEvents: 0,
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
    ui.inboxRefresh.disabled = !connected;
    ui.create.disabled = !connected;
    ui.createGroup.disabled = !connected;
    ui.join.disabled = !connected;
    showMembersPanel();
    const inConversation = connected && state.conversationId !== null;
    ui.message.disabled = !inConversation;
    ui.send.disabled = !inConversation;
  }

  /** The members panel shows while a group is open. */
  function showMembersPanel() {
    ui.membersPanel.hidden = !(state.socket?.connected && state.groups.has(state.conversationId));
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
    const edited = element('span', 'edited', '(edited)');
    edited.hidden = true;
    row.append(element('span', 'meta'), edited, element('p', 'content'), element('span', 'state'));
    if (own) row.append(element('span', 'ticks'));
    return row;
  }

  function fillRow(row, message) {
    row.dataset.id = String(message.id);
    row.dataset.sender = String(message.sender_id);
    row.dataset.type = typeof message.message_type === 'string' ? message.message_type : 'text';
    const time = new Date(message.timestamp);
    const when = Number.isNaN(time.getTime()) ? String(message.timestamp) : time.toLocaleTimeString();
    row.querySelector('.meta').textContent = `#${message.id} · user ${message.sender_id} · ${when}`;
    state.rows.set(message.id, row);
    state.oldestId = state.oldestId === null ? message.id : Math.min(state.oldestId, message.id);
    state.newestId = Math.max(state.newestId, message.id);
    applyContent(row, message);
    noteReactions(message.id, message);
    renderControls(row);
    renderTicks(row);
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
    if (!message) return;
    const fromOther = message.sender_id !== state.userId;
    // It reached this device: delivered, whichever conversation it is in.
    if (fromOther) markDelivered(message.conversation_id, message.id);
    scheduleInboxRefresh(); // its preview, its unread count, the order
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
    if (fromOther) markRead();
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

  // ---- edits, deletes and reactions ---------------------------------------------------------

  /** Milliseconds of an ISO time, or 0 for none (null, missing, unreadable). */
  function timeValue(iso) {
    const ms = typeof iso === 'string' ? Date.parse(iso) : NaN;
    return Number.isNaN(ms) ? 0 : ms;
  }

  /**
   * Shows a stored message's content and state: a tombstone once deleted (for good: nothing
   * brings it back), else the content, "(edited)" when it was. A version older than the one
   * shown (an acknowledgement overtaken by a newer edit's event) changes nothing.
   */
  function applyContent(row, message) {
    if (row.dataset.deleted === 'true') return;
    if (message.deleted_at) return showTombstone(row, message.deleted_at);
    const editedAt = timeValue(message.edited_at);
    if (editedAt < Number(row.dataset.editedAt ?? 0)) return;
    row.querySelector('.content').textContent = String(message.content ?? '');
    if (editedAt === 0) return;
    row.dataset.editedAt = String(editedAt);
    row.dataset.edited = 'true';
    const edited = row.querySelector('.edited');
    edited.hidden = false;
    edited.title = `edited ${new Date(editedAt).toLocaleString()}`;
  }

  /** A deleted message: "message deleted" in place of its content, and no controls. */
  function showTombstone(row, deletedAt) {
    endEdit(row);
    row.dataset.deleted = 'true';
    if (typeof deletedAt === 'string') row.dataset.deletedAt = deletedAt;
    row.classList.add('deleted');
    row.querySelector('.content').textContent = DELETED_TEXT;
    row.querySelector('.edited').hidden = true;
    for (const el of row.querySelectorAll('.message-actions, .reactions, .change-error')) el.remove();
    const id = Number(row.dataset.id);
    if (Number.isSafeInteger(id)) state.reactions.delete(id);
  }

  /** `{emoji: total}` from the server, totals above 0 only. */
  function countsFrom(value) {
    const counts = {};
    if (!value || typeof value !== 'object') return counts;
    for (const [emoji, total] of Object.entries(value)) {
      if (Number.isSafeInteger(total) && total > 0) counts[emoji] = total;
    }
    return counts;
  }

  function reactionsOf(messageId) {
    let reactions = state.reactions.get(messageId);
    if (!reactions) {
      reactions = { counts: {}, mine: new Set(), events: 0 };
      state.reactions.set(messageId, reactions);
    }
    return reactions;
  }

  /** The reactions a message carries (history, replay, `message-updated`), where it has them. */
  function noteReactions(messageId, message) {
    if (message.deleted_at) return;
    const reactions = reactionsOf(messageId);
    if (message.reactions && typeof message.reactions === 'object') reactions.counts = countsFrom(message.reactions);
    if (Array.isArray(message.my_reactions)) reactions.mine = new Set(message.my_reactions.map(String));
  }

  /** Our role in the open conversation when it is a group we know the roles of, else null. */
  function myRole() {
    return state.roles.get(state.conversationId)?.get(state.userId) ?? null;
  }

  /** Takes a group's roles from a list of members `[{user_id, role}]` (its creation, the inbox). */
  function setGroupRoles(conversationId, members) {
    if (!Array.isArray(members)) return;
    const roles = new Map();
    for (const member of members) {
      const user = positiveInteger(member?.user_id);
      if (user !== null && typeof member.role === 'string') roles.set(user, member.role);
    }
    const before = myRole();
    state.roles.set(conversationId, roles);
    if (conversationId === state.conversationId && myRole() !== before) renderAllControls();
  }

  /** One member's role changed (`role` null: no longer a member). */
  function noteRole(conversationId, userId, role) {
    const id = positiveInteger(conversationId);
    const user = positiveInteger(userId);
    if (id === null || user === null) return;
    state.roleEvents += 1;
    const before = myRole();
    let roles = state.roles.get(id);
    if (!roles) state.roles.set(id, (roles = new Map()));
    if (typeof role === 'string') roles.set(user, role);
    else roles.delete(user);
    if (id === state.conversationId && myRole() !== before) renderAllControls();
  }

  function renderAllControls() {
    for (const row of state.rows.values()) renderControls(row);
  }

  function actionButton(action, text, title, messageId) {
    const button = element('button', `message-action ${action}-message`, text);
    button.type = 'button';
    button.title = title;
    button.dataset.action = action;
    button.dataset.messageId = String(messageId);
    return button;
  }

  /**
   * A stored message's controls: edit (our own text messages), delete (our own; any in a group
   * we own or moderate), and its reactions. Rebuilt only when what they offer changes.
   */
  function renderControls(row) {
    const id = Number(row.dataset.id);
    if (row.dataset.deleted === 'true' || !Number.isSafeInteger(id)) return;
    const own = Number(row.dataset.sender) === state.userId;
    const canEdit = own && row.dataset.type === 'text';
    const canDelete = own || (state.groups.has(state.conversationId) && MODERATING_ROLES.has(myRole()));
    const key = `${canEdit}/${canDelete}`;
    const actions = row.querySelector('.message-actions');
    if (!actions || actions.dataset.key !== key) {
      const fresh = element('span', 'message-actions');
      fresh.dataset.key = key;
      fresh.dataset.messageId = String(id);
      if (canEdit) fresh.append(actionButton('edit', 'edit', 'Edit this message', id));
      if (canDelete) fresh.append(actionButton('delete', 'delete', 'Delete this message', id));
      if (actions) actions.replaceWith(fresh);
      else row.append(fresh);
    }
    renderReactions(row);
  }

  /** The reaction buttons: the fixed ones, then any other emoji in use; each with its count. */
  function renderReactions(row) {
    const id = Number(row.dataset.id);
    if (row.dataset.deleted === 'true' || !Number.isSafeInteger(id)) return;
    const { counts, mine } = reactionsOf(id);
    const emojis = [...QUICK_REACTIONS, ...Object.keys(counts).filter((emoji) => !QUICK_REACTIONS.includes(emoji))];
    let box = row.querySelector('.reactions');
    if (!box) {
      box = element('span', 'reactions');
      box.dataset.messageId = String(id);
      row.append(box);
    }
    const buttons = [...box.children];
    if (buttons.map((button) => button.dataset.emoji).join(' ') !== emojis.join(' ')) {
      box.replaceChildren(...emojis.map((emoji) => {
        const button = element('button', 'reaction');
        button.type = 'button';
        button.dataset.action = 'react';
        button.dataset.emoji = emoji;
        button.dataset.messageId = String(id);
        return button;
      }));
    }
    for (const button of box.children) {
      const emoji = button.dataset.emoji;
      const count = counts[emoji] ?? 0;
      const pressed = mine.has(emoji);
      button.dataset.count = String(count);
      button.dataset.mine = String(pressed);
      button.setAttribute('aria-pressed', String(pressed));
      button.textContent = count > 0 ? `${emoji} ${count}` : emoji;
      button.title = pressed ? `Take back your ${emoji}` : `React with ${emoji}`;
    }
  }

  /** A refused (or unanswered) change: in the error list, and on the message's row until the next success. */
  function changeFailed(row, name, error) {
    showError(`${name} #${row.dataset.id}: ${error}`);
    let shown = row.querySelector('.change-error');
    if (!shown) row.append((shown = element('span', 'change-error')));
    shown.textContent = `${name} failed: ${error}`;
    row.dataset.change = 'failed';
  }

  /**
   * Emits `edit-message`, `delete-message` or `react` about a row's message, and waits for its
   * acknowledgement: the ack on success, else null (the reason is shown; the server's `error`
   * event about it shows too). Null as well when the page has moved to another conversation.
   */
  async function changeMessage(name, row, payload) {
    const socket = state.socket;
    const conversationId = state.conversationId;
    const messageId = Number(row.dataset.id);
    if (!socket || conversationId === null || !Number.isSafeInteger(messageId)) return null;
    row.dataset.change = 'pending';
    let ack;
    try {
      ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(name, { conversationId, messageId, ...payload });
    } catch {
      // Unless the user disconnected meanwhile, which answers nothing by design.
      if (state.socket === socket) changeFailed(row, name, 'no answer');
      return null;
    }
    logEvent(`ack ${name}`, ack);
    if (!ack || ack.success !== true) {
      changeFailed(row, name, typeof ack?.error === 'string' ? ack.error : 'refused');
      return null;
    }
    if (state.conversationId !== conversationId || state.rows.get(messageId) !== row) return null;
    row.dataset.change = 'done';
    row.querySelector('.change-error')?.remove();
    return ack;
  }

  /** Edit in place: the content gives way to a box with the text, Save and Cancel. */
  function startEdit(row) {
    if (row.dataset.deleted === 'true' || row.querySelector('.edit-form')) return;
    const content = row.querySelector('.content');
    const form = element('form', 'edit-form');
    form.dataset.messageId = row.dataset.id;
    const input = element('textarea', 'edit-input');
    input.rows = 2;
    input.value = content.textContent;
    input.setAttribute('aria-label', `New content of message ${row.dataset.id}`);
    const save = element('button', 'edit-save', 'save');
    save.type = 'submit';
    const cancel = element('button', 'edit-cancel', 'cancel');
    cancel.type = 'button';
    form.append(input, save, cancel);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      saveEdit(row, form, input);
    });
    cancel.addEventListener('click', () => endEdit(row));
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === 'Escape') {
        endEdit(row);
      }
    });
    content.hidden = true;
    content.after(form);
    input.focus();
  }

  function endEdit(row) {
    row.querySelector('.edit-form')?.remove();
    row.querySelector('.content').hidden = false;
  }

  async function saveEdit(row, form, input) {
    const content = input.value;
    if (content === row.querySelector('.content').textContent) return endEdit(row);
    const fields = [...form.elements];
    for (const field of fields) field.disabled = true;
    const ack = await changeMessage('edit-message', row, { content });
    if (!form.isConnected) return; // deleted, or cancelled, meanwhile
    for (const field of fields) field.disabled = false;
    if (!ack) return input.focus(); // refused: the text stays, to be fixed
    if (ack.message && typeof ack.message === 'object') applyContent(row, ack.message);
    endEdit(row);
  }

  async function deleteMessage(row) {
    const ack = await changeMessage('delete-message', row, {});
    if (ack) showTombstone(row, ack.deleted_at);
  }

  /** Adds our `emoji` to a message, or takes it back when we had added it. */
  async function toggleReaction(row, emoji) {
    const id = Number(row.dataset.id);
    const reactions = reactionsOf(id);
    const on = !reactions.mine.has(emoji);
    const seen = reactions.events;
    const ack = await changeMessage('react', row, { emoji, on });
    const now = state.reactions.get(id);
    if (!ack || !now || row.dataset.deleted === 'true') return;
    if ((typeof ack.on === 'boolean' ? ack.on : on)) now.mine.add(emoji);
    else now.mine.delete(emoji);
    // The room's `reaction-updated` carries the same counts; a newer one may have come first.
    if (now.events === seen && ack.counts && typeof ack.counts === 'object') now.counts = countsFrom(ack.counts);
    renderReactions(row);
  }

  /** Clicks on a message's controls (the rows come and go, so one listener on the list). */
  function onMessagesClick(event) {
    const button = event.target.closest('button[data-action]');
    const row = button?.closest('#messages > li.message');
    if (!button || !row || button.disabled) return;
    if (button.dataset.action === 'edit') startEdit(row);
    else if (button.dataset.action === 'delete') deleteMessage(row);
    else if (button.dataset.action === 'react') toggleReaction(row, button.dataset.emoji);
  }

  /** `message-updated`: the stored message after an edit. */
  function onMessageUpdated(message) {
    if (!message) return;
    scheduleInboxRefresh(); // it may be a conversation's last message
    const row = message.conversation_id === state.conversationId ? state.rows.get(message.id) : null;
    if (!row) return;
    applyContent(row, message);
    if (row.dataset.deleted === 'true') return;
    if (message.reactions && typeof message.reactions === 'object') {
      const reactions = reactionsOf(message.id);
      reactions.counts = countsFrom(message.reactions);
      reactions.events += 1;
    }
    // Not its `my_reactions`, if any: a broadcast's list is not this user's. Our own come from
    // the history, the replay, our acks and `reaction-updated`.
    renderReactions(row);
  }

  /** `message-deleted {conversationId, messageId, deleted_at}`. */
  function onMessageDeleted(payload) {
    if (!payload) return;
    scheduleInboxRefresh();
    const row = payload.conversationId === state.conversationId ? state.rows.get(payload.messageId) : null;
    if (row) showTombstone(row, payload.deleted_at);
  }

  /** `reaction-updated {conversationId, messageId, userId, emoji, on, counts}`. */
  function onReactionUpdated(payload) {
    if (!payload) return;
    const row = payload.conversationId === state.conversationId ? state.rows.get(payload.messageId) : null;
    if (!row || row.dataset.deleted === 'true') return;
    const reactions = reactionsOf(payload.messageId);
    reactions.events += 1;
    if (payload.counts && typeof payload.counts === 'object') reactions.counts = countsFrom(payload.counts);
    if (payload.userId === state.userId && typeof payload.emoji === 'string') {
      if (payload.on === true) reactions.mine.add(payload.emoji);
      else if (payload.on === false) reactions.mine.delete(payload.emoji);
    }
    renderReactions(row);
  }

  // ---- history -------------------------------------------------------------------------------

  async function loadPage(before) {
    const conversationId = state.conversationId;
    ui.loadOlder.disabled = true;
    // `my_reactions` are the requester's: in JWT mode the token's user, else `user_id`'s.
    const viewer = state.token ? '' : `&user_id=${state.userId}`;
    try {
      const page = await rest(
        'GET',
        `/api/chats/conversations/${conversationId}/messages?before=${before}&limit=${PAGE_SIZE}${viewer}`,
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

  // ---- groups --------------------------------------------------------------------------------

  async function createGroup(event) {
    event.preventDefault();
    const name = ui.groupName.value.trim();
    const ids = ui.groupMembers.value.split(/[\s,]+/).filter(Boolean).map(positiveInteger);
    if (ids.some((id) => id === null)) return showError('Member IDs must be positive integers, separated by commas');
    try {
      const group = await rest('POST', '/api/chats/groups', { creator_id: state.userId, name, member_ids: ids });
      state.groups.set(group.id, group.name);
      setGroupRoles(group.id, group.members);
      ui.conversationId.value = String(group.id);
      await join(group.id);
    } catch (e) {
      showError(e.message);
    }
  }

  /**
   * Emits a membership change and waits for its acknowledgement. A refusal's reason also comes
   * as an `error` event, shown by that handler; the ack goes to the events list.
   */
  async function changeMembers(name, payload) {
    const socket = state.socket;
    if (!socket || state.conversationId === null) return;
    try {
      const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(name, { conversationId: state.conversationId, ...payload });
      logEvent(`${name} ack`, ack);
    } catch {
      if (socket.connected) showError(`${name}: no answer`);
    }
  }

  function memberFromForm() {
    const userId = positiveInteger(ui.memberId.value);
    if (userId === null) showError('Member ID must be a positive integer');
    return userId;
  }

  const MEMBER_CHANGES = { 'member-added': 'added', 'member-removed': 'removed', 'role-changed': 'made' };

  /** A membership change of the open group, as a line among its messages. */
  function onMemberEvent(name, payload) {
    if (payload) noteRole(payload.conversationId, payload.userId, name === 'member-removed' ? null : payload.role);
    if (!payload || payload.conversationId !== state.conversationId) {
      scheduleInboxRefresh(); // another group of ours: its entry may come or go
      return;
    }
    const who = payload.userId === state.userId ? 'You' : `User ${payload.userId}`;
    const by = payload.by === payload.userId ? '' : ` by user ${payload.by}`;
    const what = name === 'role-changed' ? `${MEMBER_CHANGES[name]} ${payload.role}` : `${MEMBER_CHANGES[name]} (${payload.role})`;
    const line = element('li', 'member-change');
    line.append(element('span', 'content', `${who} ${name === 'member-removed' && !by ? 'left' : what}${by}`));
    line.dataset.event = name;
    line.dataset.user = String(payload.userId);
    ui.messages.append(line);
    if (name === 'member-removed' && payload.userId === state.userId) {
      // Out of the group: the server has taken this socket out of its room.
      resetConversation(null);
      ui.messages.append(line);
      ui.joined.textContent = '';
      setConnectedControls(Boolean(state.socket?.connected));
    }
    scheduleInboxRefresh();
  }

  function resetConversation(conversationId) {
    state.conversationId = conversationId;
    state.oldestId = null;
    state.newestId = 0;
    state.peer = { delivered: 0, read: 0 };
    state.readRequested = 0;
    state.rows.clear();
    state.reactions.clear();
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
      // A join without `lastMessageId` replays no receipts: the ticks start from the inbox list.
      const entry = state.inbox.entries.get(conversationId);
      if (entry) notePositionsOf(entry);
      await loadPage(NEWEST);
    }
    setConnectedControls(socket.connected);
    markCurrentInInbox();
    markRead();
    scheduleInboxRefresh();
  }

  function joinFromForm(event) {
    event.preventDefault();
    const id = positiveInteger(ui.conversationId.value);
    if (id === null) return showError('Conversation ID must be a positive integer');
    join(id);
  }

  // ---- receipts ------------------------------------------------------------------------------

  /** What the other member did with message `id`, by their positions: reading implies delivered. */
  function receiptOf(id, positions) {
    if (id <= positions.read) return 'read';
    if (id <= positions.delivered) return 'delivered';
    return 'none';
  }

  function setTicks(el, receipt) {
    el.dataset.receipt = receipt;
    el.textContent = TICKS[receipt];
    el.title = TICK_TITLES[receipt];
  }

  /** The ticks of one of our stored messages in the open conversation (others' have none). */
  function renderTicks(row) {
    const ticks = row.querySelector('.ticks');
    const id = Number(row.dataset.id);
    if (!ticks || !Number.isSafeInteger(id)) return;
    const receipt = receiptOf(id, state.peer);
    row.dataset.receipt = receipt;
    setTicks(ticks, receipt);
  }

  /**
   * A member's position from an event or an inbox page. Only the other member's positions in
   * the open conversation show (as ticks); ours show as unread counts, from the inbox.
   */
  function notePosition(conversationId, userId, kind, messageId) {
    const id = positiveInteger(messageId);
    if (conversationId !== state.conversationId || userId === state.userId || id === null) return;
    const { delivered, read } = state.peer;
    if (kind === 'read') state.peer.read = Math.max(read, id);
    state.peer.delivered = Math.max(delivered, state.peer.read, kind === 'delivered' ? id : 0);
    if (state.peer.read === read && state.peer.delivered === delivered) return;
    for (const row of state.rows.values()) renderTicks(row);
  }

  function notePositionsOf(entry) {
    for (const member of entry.members ?? []) {
      notePosition(entry.id, member.user_id, 'read', member.last_read_message_id);
      notePosition(entry.id, member.user_id, 'delivered', member.last_delivered_message_id);
    }
  }

  function onReceipt(payload, kind) {
    if (!payload) return;
    notePosition(payload.conversationId, payload.userId, kind, payload.messageId);
    // Someone read: unread counts (ours, if it was us on another tab) and the inbox's ticks move.
    if (kind === 'read') scheduleInboxRefresh();
  }

  /**
   * Emits a receipt and waits for its acknowledgement: the ack, or null when refused or not
   * answered. A refusal's reason also comes as an `error` event, shown by that handler; the
   * ack itself goes to the events list (acks are not events, and would show nowhere else).
   */
  async function emitReceipt(name, conversationId, messageId) {
    const socket = state.socket;
    if (!socket) return null;
    let ack;
    try {
      ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(name, { conversationId, messageId });
    } catch {
      // Unless the user disconnected meanwhile, which answers nothing by design.
      if (state.socket === socket) showError(`${name} ${conversationId}/${messageId}: no answer`);
      return null;
    }
    logEvent(`ack ${name}`, ack);
    return ack && ack.success === true ? ack : null;
  }

  /** Tells the sender their message reached this device, once per message. */
  function markDelivered(conversationId, messageId) {
    const conversation = positiveInteger(conversationId);
    const id = positiveInteger(messageId);
    if (!state.socket || conversation === null || id === null) return;
    if ((state.deliveredRequested.get(conversation) ?? 0) >= id) return;
    state.deliveredRequested.set(conversation, id);
    emitReceipt('mark-delivered', conversation, id);
  }

  /**
   * Marks the open conversation read up to its newest message, but only while the person can
   * see it: a conversation open in a background tab has not been read.
   */
  async function markRead() {
    const conversationId = state.conversationId;
    const id = state.newestId;
    if (!state.socket || conversationId === null || id === 0) return;
    if (document.visibilityState !== 'visible' || id <= state.readRequested) return;
    state.readRequested = id;
    const ack = await emitReceipt('mark-read', conversationId, id);
    // Not done: let the next message or the next visibility ask again.
    if (!ack && state.conversationId === conversationId && state.readRequested === id) state.readRequested = 0;
  }

  function onVisibilityChange() {
    if (document.visibilityState !== 'visible') return;
    markRead();
    scheduleInboxRefresh();
  }

  // ---- inbox ---------------------------------------------------------------------------------

  function scheduleInboxRefresh() {
    if (!state.socket) return;
    clearTimeout(state.inbox.debounce);
    state.inbox.debounce = setTimeout(() => {
      if (state.socket?.connected) loadInbox(null);
    }, INBOX_DEBOUNCE_MS);
  }

  /** Forgets a load that is due or under way: its answer would come for a socket gone since. */
  function cancelInboxLoad() {
    clearTimeout(state.inbox.debounce);
    state.inbox.seq += 1;
  }

  /** The first inbox page (`before` null: it replaces the list), or the page after `before`. */
  async function loadInbox(before) {
    clearTimeout(state.inbox.debounce);
    const userId = state.userId;
    const seq = ++state.inbox.seq;
    const roleEvents = state.roleEvents;
    const cursor = before === null ? '' : `&before=${encodeURIComponent(before)}`;
    try {
      const page = await rest('GET', `/api/chats/users/${userId}/conversations?limit=${INBOX_PAGE_SIZE}${cursor}`);
      // A later load (or a disconnect) came since: its answer is the one to show.
      if (seq !== state.inbox.seq || !state.socket || userId !== state.userId) return;
      showInbox(page, before !== null, roleEvents === state.roleEvents);
    } catch (e) {
      if (seq === state.inbox.seq && state.socket) showError(e.message);
    }
  }

  /** Shows an inbox page; `rolesFresh`: no membership event came since it was asked for. */
  function showInbox(page, append, rolesFresh) {
    if (!append) {
      ui.inbox.replaceChildren();
      state.inbox.entries.clear();
    }
    for (const entry of Array.isArray(page.data) ? page.data : []) {
      const id = positiveInteger(entry.id);
      if (id === null) continue;
      // Activity between two pages may move a conversation onto the next one: show it once.
      ui.inbox.querySelector(`li[data-conversation="${id}"]`)?.remove();
      state.inbox.entries.set(id, entry);
      ui.inbox.append(inboxItem(entry));
      // Else the event's refresh, due soon, brings roles that include it.
      if (entry.type === 'group' && rolesFresh) setGroupRoles(id, entry.members);
      notePositionsOf(entry);
      deliverFromInbox(entry);
    }
    const total = Number.isSafeInteger(page.total_unread) ? page.total_unread : 0;
    ui.totalUnread.textContent = String(total);
    ui.totalUnread.dataset.count = String(total);
    state.inbox.next = typeof page.next_before === 'string' ? page.next_before : null;
    ui.inboxMore.hidden = state.inbox.next === null;
    showMembersPanel(); // the page may have told that the open conversation is a group
    // How many pages were shown: lets a watcher (the browser tests) tell a load has landed.
    ui.inbox.dataset.pages = String(Number(ui.inbox.dataset.pages ?? 0) + 1);
  }

  /** The other member's positions in an inbox entry (0 for none yet). */
  function otherPositions(entry) {
    const other = (entry.members ?? []).find((member) => member.user_id !== state.userId);
    return { delivered: other?.last_delivered_message_id ?? 0, read: other?.last_read_message_id ?? 0 };
  }

  function timeOf(iso) {
    const time = new Date(iso);
    if (Number.isNaN(time.getTime())) return String(iso ?? '');
    const today = time.toDateString() === new Date().toDateString();
    return today ? time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : time.toLocaleDateString();
  }

  /** The last message as one short line of text; the list item clips it to its width. */
  function previewOf(message, own) {
    const deleted = Boolean(message.deleted_at) || message.content === null;
    const text = deleted ? DELETED_TEXT : String(message.content ?? '').replace(/\s+/g, ' ').slice(0, 120);
    const kind = message.message_type && message.message_type !== 'text' ? `[${message.message_type}] ` : '';
    return `${own ? 'You: ' : ''}${kind}${text}`;
  }

  function unreadBadge(count) {
    const badge = element('span', 'badge unread', String(count));
    badge.title = `${count} unread`;
    badge.hidden = count === 0; // zeros would be noise in a list; the item's data-unread still says 0
    return badge;
  }

  function inboxItem(entry) {
    const unread = Number.isSafeInteger(entry.unread_count) ? entry.unread_count : 0;
    const item = element('li', 'inbox-item');
    item.dataset.conversation = String(entry.id);
    item.dataset.unread = String(unread);
    if (entry.id === state.conversationId) item.classList.add('current');

    const other = entry.sender_id === state.userId ? entry.receiver_id : entry.sender_id;
    const title = entry.type === 'group' ? `Group ${entry.name}` : `User ${other}`;
    if (entry.type === 'group') state.groups.set(entry.id, entry.name);
    const head = element('span', 'inbox-line');
    head.append(element('span', 'inbox-peer', title), element('span', 'inbox-time', timeOf(entry.last_activity_at)));

    const last = entry.last_message;
    const own = Boolean(last) && last.sender_id === state.userId;
    const ticks = element('span', 'ticks');
    setTicks(ticks, own ? receiptOf(last.id, otherPositions(entry)) : 'none');
    const preview = element('span', last ? 'inbox-preview' : 'inbox-preview empty', last ? previewOf(last, own) : 'no messages yet');
    const body = element('span', 'inbox-line');
    body.append(ticks, preview, unreadBadge(unread));

    const open = element('button', 'inbox-open');
    open.type = 'button';
    open.title = `Open conversation ${entry.id}`;
    open.append(head, body);
    open.addEventListener('click', () => openFromInbox(entry.id));
    item.append(open);
    return item;
  }

  /**
   * The list brought the newest message of a conversation this socket has not joined (which
   * gets no `receive-message` for it) to this device: that is a delivery too.
   */
  function deliverFromInbox(entry) {
    const last = entry.last_message;
    if (!last || last.sender_id === state.userId) return;
    const mine = (entry.members ?? []).find((member) => member.user_id === state.userId);
    if ((mine?.last_delivered_message_id ?? 0) < last.id) markDelivered(entry.id, last.id);
  }

  function markCurrentInInbox() {
    for (const item of ui.inbox.children) {
      item.classList.toggle('current', Number(item.dataset.conversation) === state.conversationId);
    }
  }

  function openFromInbox(conversationId) {
    ui.conversationId.value = String(conversationId);
    join(conversationId);
  }

  function loadMoreInbox() {
    if (state.inbox.next !== null) loadInbox(state.inbox.next);
  }

  function startInboxPoll() {
    clearInterval(state.inbox.poll);
    state.inbox.poll = setInterval(() => {
      if (document.visibilityState === 'visible' && state.socket?.connected) loadInbox(null);
    }, INBOX_POLL_MS);
  }

  function clearInbox() {
    cancelInboxLoad();
    clearInterval(state.inbox.poll);
    state.inbox.entries.clear();
    state.inbox.next = null;
    state.deliveredRequested.clear();
    ui.inbox.replaceChildren();
    ui.inboxMore.hidden = true;
    ui.totalUnread.textContent = '0';
    ui.totalUnread.dataset.count = '0';
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
    state.roles.clear();
    clearInbox();
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
      // Not at once: a socket the server refuses (a bad token) is connected for a moment, told
      // why, then disconnected, and the same credentials would only fail on REST too.
      if (state.conversationId !== null) join(state.conversationId); // which refreshes it
      else scheduleInboxRefresh();
    });
    socket.on('disconnect', (reason) => {
      cancelInboxLoad();
      setStatus(`disconnected (${reason})`, 'disconnected');
      setConnectedControls(false);
    });
    socket.on('connect_error', (err) => showError(`connect_error: ${err.message}`));
    socket.on('error', (payload) => showError(`error: ${payload && payload.message}`));
    socket.on('receive-message', onReceive);
    socket.on('message-sent', onSent);
    socket.on('message-error', onSendError);
    socket.on('user-typing', onUserTyping);
    socket.on('message-delivered', (payload) => onReceipt(payload, 'delivered'));
    socket.on('message-read', (payload) => onReceipt(payload, 'read'));
    socket.on('user:online', (payload) => onPresence(payload, true));
    socket.on('user:offline', (payload) => onPresence(payload, false));
    for (const name of Object.keys(MEMBER_CHANGES)) socket.on(name, (payload) => onMemberEvent(name, payload));
    socket.on('message-updated', onMessageUpdated);
    socket.on('message-deleted', onMessageDeleted);
    socket.on('reaction-updated', onReactionUpdated);
    startInboxPoll();
  }

  // ---- wiring --------------------------------------------------------------------------------

  ui.serverUrl.value = /^https?:$/.test(location.protocol) ? location.origin : 'http://localhost:3000';
  ui.connectForm.addEventListener('submit', connect);
  ui.disconnect.addEventListener('click', disconnect);
  ui.createForm.addEventListener('submit', createConversation);
  ui.groupForm.addEventListener('submit', createGroup);
  ui.membersForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const userId = memberFromForm();
    if (userId !== null) changeMembers('add-member', { userId, role: ui.memberRole.value });
  });
  ui.removeMember.addEventListener('click', () => {
    const userId = memberFromForm();
    if (userId !== null) changeMembers('remove-member', { userId });
  });
  ui.setRole.addEventListener('click', () => {
    const userId = memberFromForm();
    if (userId !== null) changeMembers('set-role', { userId, role: ui.memberRole.value });
  });
  ui.leaveGroup.addEventListener('click', () => changeMembers('leave-group', {}));
  ui.joinForm.addEventListener('submit', joinFromForm);
  ui.loadOlder.addEventListener('click', loadOlder);
  ui.messages.addEventListener('click', onMessagesClick);
  ui.inboxRefresh.addEventListener('click', () => loadInbox(null));
  ui.inboxMore.addEventListener('click', loadMoreInbox);
  document.addEventListener('visibilitychange', onVisibilityChange);
  ui.sendForm.addEventListener('submit', send);
  ui.message.addEventListener('input', onInput);
  ui.message.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) send(event);
  });
  document.body.dataset.ready = 'true';
})();
