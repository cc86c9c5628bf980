// Lineside web page: a device that asks over MQTT 3.1.1 over a WebSocket (docs/web.md).
// The browser logs in to Mosquitto with a device account; the broker's ACL applies as to any device.
"use strict";

const ROOT = "lineside/v1";
const HISTORY_MAX = 50;
const ANSWER_TIMEOUT_MS = 150000; // the gateway gives the model 120 s; past this, say nothing came
const KEEPALIVE_S = 30;

// ------------------------------------------------------------------ texts
const TEXT = {
  en: {
    loginTitle: "Log in with this device's account", user: "Device name", password: "Password",
    remember: "Remember on this device", login: "Log in", logout: "Log out", question: "Question",
    placeholder: "Ask about a fault, a setting, a stop…", ask: "Ask", retry: "Try again",
    evidenceTitle: "From the documents", sourcesTitle: "Sources", historyTitle: "Earlier questions", close: "Close",
    connecting: "Connecting…", badLogin: "Wrong device name or password, or this device was removed.",
    noBox: "Cannot reach the box. Check the network, then try again.",
    offline: "No connection to the box. Reconnecting…", serviceDown: "The assistant on the box is offline. Tell the box's operator.",
    searching: "Searching the documents…", writing: "Found in the documents; writing the answer…",
    answered: "Answer", cached: "Answer (asked before)", fallback: "The documents do not cover this question. Please contact technical support.",
    busy: "The box is busy. Try again in a minute.", rate_limited: "This device asked too often. Wait a minute, then try again.",
    rejected: "The question was not accepted: ", error: "Something on the box failed. Try again later. ",
    noAnswer: "No answer came. Check the connection and try again.", empty: "Type a question first.",
    line: "Line", plantWide: "all lines", loading: "Opening the source…", page: "page", row: "row",
    sourceError: "The source cannot be shown: ", noHistory: "No questions yet.",
    adminTitle: "Operator", servicesTitle: "Services", documentsTitle: "Documents", upload: "Upload", refresh: "Refresh list",
    online: "online", offlineState: "offline", chunks: "chunks", version: "version", delete: "Delete", deleteConfirm: "Tap again to delete",
    noDocuments: "No documents yet.", documentsFailed: "The list did not come:", noReply: "no reply from the box", deleting: "deleting…",
    chooseFile: "Choose a file first.", sending: "sending", uploadFailed: "sending stopped:",
    stage_received: "received, reading…", stage_parsed: "read, indexing…", stage_indexed: "ready to be asked about",
    stage_unchanged: "unchanged (already in the knowledge base)", stage_deleted: "deleted", stage_failed: "failed:",
    devicesTitle: "Devices", deviceName: "New device's name", deviceLine: "Its line (empty: all lines)", addDevice: "Add device",
    passwordOnce: "Its password, shown only now: put it into the device.", remove: "Remove", removeConfirm: "Tap again to remove",
    adding: "adding…", removing: "removing…", added: "added", removed: "removed: it can no longer connect", you: "you",
    roleOperator: "operator", devicesFailed: "Not done:",
    reasons: {
      nothing_found: "Nothing in the documents matches.", unknown_line: "No document names that production line.",
      unknown_machine: "No document names that machine or part.", unknown_code: "No document has that fault code.",
      not_covered: "The documents are not about this.", model_unsure: "The documents found do not answer it.",
    },
  },
  zh: {
    loginTitle: "用本设备的账号登录", user: "设备名", password: "密码",
    remember: "在本设备上记住", login: "登录", logout: "退出", question: "问题",
    placeholder: "询问故障、参数、停机原因……", ask: "提问", retry: "重试",
    evidenceTitle: "文档原文", sourcesTitle: "来源", historyTitle: "历史问题", close: "关闭",
    connecting: "正在连接……", badLogin: "设备名或密码错误，或该设备已被删除。",
    noBox: "无法连接到服务器，请检查网络后重试。",
    offline: "与服务器的连接已断开，正在重连……", serviceDown: "服务器上的助手已离线，请联系管理员。",
    searching: "正在检索文档……", writing: "已在文档中找到，正在生成回答……",
    answered: "回答", cached: "回答（之前问过）", fallback: "文档中没有相关内容，请联系技术支持。",
    busy: "系统繁忙，请一分钟后重试。", rate_limited: "本设备提问过于频繁，请等一分钟再试。",
    rejected: "问题未被接受：", error: "服务器出错，请稍后重试。",
    noAnswer: "没有收到回答，请检查连接后重试。", empty: "请先输入问题。",
    line: "产线", plantWide: "全厂", loading: "正在打开来源……", page: "页", row: "行",
    sourceError: "无法显示该来源：", noHistory: "还没有提问。",
    adminTitle: "管理", servicesTitle: "服务状态", documentsTitle: "文档", upload: "上传", refresh: "刷新列表",
    online: "在线", offlineState: "离线", chunks: "段", version: "版本", delete: "删除", deleteConfirm: "再点一次删除",
    noDocuments: "还没有文档。", documentsFailed: "未能获取列表：", noReply: "服务器没有回应", deleting: "正在删除……",
    chooseFile: "请先选择文件。", sending: "正在发送", uploadFailed: "发送中断：",
    stage_received: "已收到，正在读取……", stage_parsed: "已读取，正在建立索引……", stage_indexed: "已可提问",
    stage_unchanged: "未变化（已在知识库中）", stage_deleted: "已删除", stage_failed: "失败：",
    devicesTitle: "设备", deviceName: "新设备名", deviceLine: "所属产线（留空：全厂）", addDevice: "添加设备",
    passwordOnce: "设备密码仅显示这一次，请立即填入设备：", remove: "删除", removeConfirm: "再点一次删除",
    adding: "正在添加……", removing: "正在删除……", added: "已添加", removed: "已删除，该设备无法再连接", you: "本账号",
    roleOperator: "管理员", devicesFailed: "未完成：",
    reasons: {
      nothing_found: "文档中没有匹配的内容。", unknown_line: "没有文档提到这条产线。",
      unknown_machine: "没有文档提到该设备或零件。", unknown_code: "没有文档包含该故障代码。",
      not_covered: "文档不涉及这个问题。", model_unsure: "找到的文档不能回答这个问题。",
    },
  },
};

const $ = (id) => document.getElementById(id);
const store = { get: (k) => { try { return localStorage.getItem(k); } catch { return null; } },
                set: (k, v) => { try { localStorage.setItem(k, v); } catch { /* private mode: not kept */ } } };
let lang = store.get("lineside.lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
const t = (key) => TEXT[lang][key] ?? TEXT.en[key] ?? key;

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  $("lang").textContent = lang === "zh" ? "English" : "中文";
  showWho();
  renderHistory();
  if (state.last) renderStatus(state.last);
}

// ------------------------------------------------------------------ MQTT 3.1.1 over WebSocket
const enc = new TextEncoder();
const dec = new TextDecoder();

function varint(n) {
  const out = [];
  do { let b = n % 128; n = Math.floor(n / 128); if (n > 0) b |= 128; out.push(b); } while (n > 0);
  return out;
}
function str(s) { const b = enc.encode(s); return [b.length >> 8, b.length & 255, ...b]; }
function concat(parts) {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : new Uint8Array(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) { out.set(a, at); at += a.length; }
  return out;
}
function packet(type, ...parts) {
  const body = concat(parts);
  return concat([[type, ...varint(body.length)], body]);
}

// MessagePack, for the operator section's internal messages (docs/web.md): the types they use.
function mpEncode(v, out = []) {
  const u32 = (n) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  if (v === null || v === undefined) out.push([0xc0]);
  else if (typeof v === "boolean") out.push([v ? 0xc3 : 0xc2]);
  else if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 2 ** 32) {
    out.push(v < 128 ? [v] : v < 65536 ? [0xcd, v >> 8, v & 255] : [0xce, ...u32(v)]);
  } else if (typeof v === "number") {
    const dv = new DataView(new ArrayBuffer(9)); dv.setUint8(0, 0xcb); dv.setFloat64(1, v); out.push(new Uint8Array(dv.buffer));
  } else if (typeof v === "string" || v instanceof Uint8Array) {
    const b = typeof v === "string" ? enc.encode(v) : v, n = b.length;
    if (typeof v === "string") out.push(n < 32 ? [0xa0 | n] : n < 256 ? [0xd9, n] : n < 65536 ? [0xda, n >> 8, n & 255] : [0xdb, ...u32(n)]);
    else out.push(n < 256 ? [0xc4, n] : n < 65536 ? [0xc5, n >> 8, n & 255] : [0xc6, ...u32(n)]);
    out.push(b);
  } else {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    out.push(keys.length < 16 ? [0x80 | keys.length] : [0xde, keys.length >> 8, keys.length & 255]);
    for (const k of keys) { mpEncode(k, out); mpEncode(v[k], out); }
  }
  return out;
}
function mpDecode(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const take = (n) => { const v = bytes.subarray(p, p + n); p += n; return v; };
  const num = (get, n) => { const v = dv[get](p); p += n; return v; };
  const many = (n, isMap) => {
    if (!isMap) return Array.from({ length: n }, () => read());
    const o = {};
    for (let i = 0; i < n; i++) { const k = read(); o[k] = read(); }
    return o;
  };
  function read() {
    const b = bytes[p++];
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 256;
    if (b >= 0x80 && b <= 0x8f) return many(b & 15, true);
    if (b >= 0x90 && b <= 0x9f) return many(b & 15, false);
    if (b >= 0xa0 && b <= 0xbf) return dec.decode(take(b & 31));
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return take(num("getUint8", 1));
      case 0xc5: return take(num("getUint16", 2));
      case 0xc6: return take(num("getUint32", 4));
      case 0xca: return num("getFloat32", 4);
      case 0xcb: return num("getFloat64", 8);
      case 0xcc: return num("getUint8", 1);
      case 0xcd: return num("getUint16", 2);
      case 0xce: return num("getUint32", 4);
      case 0xcf: return Number(num("getBigUint64", 8));
      case 0xd0: return num("getInt8", 1);
      case 0xd1: return num("getInt16", 2);
      case 0xd2: return num("getInt32", 4);
      case 0xd3: return Number(num("getBigInt64", 8));
      case 0xd9: return dec.decode(take(num("getUint8", 1)));
      case 0xda: return dec.decode(take(num("getUint16", 2)));
      case 0xdb: return dec.decode(take(num("getUint32", 4)));
      case 0xdc: return many(num("getUint16", 2), false);
      case 0xdd: return many(num("getUint32", 4), false);
      case 0xde: return many(num("getUint16", 2), true);
      case 0xdf: return many(num("getUint32", 4), true);
      default: throw new Error(`MessagePack type 0x${b.toString(16)} not read here`);
    }
  }
  return read();
}

class Mqtt {
  constructor(user, password, handlers) {
    this.user = user; this.password = password; this.h = handlers;
    this.buf = new Uint8Array(0); this.nextId = 1; this.ws = null; this.pinger = null; this.acks = new Map();
  }
  connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/mqtt";
    const ws = new WebSocket(url, ["mqtt"]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      // Clean session, user name and password; the broker makes the client id the user name.
      ws.send(packet(0x10, [...str("MQTT"), 4, 0xc2, 0, KEEPALIVE_S, ...str(this.user), ...str(this.user), ...str(this.password)]));
      this.pinger = setInterval(() => this.send(new Uint8Array([0xc0, 0])), (KEEPALIVE_S - 5) * 1000);
    };
    ws.onmessage = (ev) => this.receive(new Uint8Array(ev.data));
    ws.onclose = () => {
      clearInterval(this.pinger);
      for (const [, reject] of this.acks.values()) reject(new Error("connection closed"));
      this.acks.clear();
      if (this.ws === ws) this.h.onClose();
    };
  }
  close() { const ws = this.ws; this.ws = null; clearInterval(this.pinger); if (ws) ws.close(); }
  send(bytes) { if (this.ws && this.ws.readyState === 1) { this.ws.send(bytes); return true; } return false; }
  subscribe(filters) {
    const id = this.nextId++ % 65536 || 1;
    const body = [id >> 8, id & 255];
    for (const f of filters) body.push(...str(f), 1);
    this.send(packet(0x82, body));
  }
  publish(topic, payload) {
    const id = this.nextId++ % 65536 || 1;
    return this.send(packet(0x32, [...str(topic), id >> 8, id & 255], typeof payload === "string" ? enc.encode(payload) : payload));
  }
  // Publish at QoS 1 and wait for the broker's PUBACK (the upload's progress and pace).
  publishAcked(topic, payload) {
    const id = this.nextId % 65536 || 1;
    return new Promise((resolve, reject) => {
      this.acks.set(id, [resolve, reject]);
      if (!this.publish(topic, payload)) { this.acks.delete(id); reject(new Error("not connected")); }
    });
  }
  receive(chunk) {
    const all = new Uint8Array(this.buf.length + chunk.length);
    all.set(this.buf); all.set(chunk, this.buf.length);
    let pos = 0;
    while (all.length - pos >= 2) {
      let len = 0, mul = 1, i = pos + 1, b;
      do { if (i >= all.length) { this.buf = all.slice(pos); return; } b = all[i++]; len += (b & 127) * mul; mul *= 128; } while (b & 128);
      if (i + len > all.length) break;
      this.handle(all[pos], all.subarray(i, i + len));
      pos = i + len;
    }
    this.buf = all.slice(pos);
  }
  handle(first, body) {
    const type = first >> 4;
    if (type === 2) { this.h.onConnack(body[1]); return; }
    if (type === 4) {
      const id = (body[0] << 8) | body[1], waiting = this.acks.get(id);
      if (waiting) { this.acks.delete(id); waiting[0](); }
      return;
    }
    if (type !== 3) return; // SUBACK, PINGRESP: nothing to do
    const qos = (first >> 1) & 3;
    const tlen = (body[0] << 8) | body[1];
    const topic = dec.decode(body.subarray(2, 2 + tlen));
    let p = 2 + tlen;
    if (qos > 0) { this.send(new Uint8Array([0x40, 2, body[p], body[p + 1]])); p += 2; }
    this.h.onMessage(topic, body.slice(p));
  }
}

// ------------------------------------------------------------------ state
const state = {
  mqtt: null, device: "", line: undefined, role: "device", pending: null, last: null, shown: null, retryDelay: 1000, gatewayDown: false,
  services: {}, upload: null, waiting: new Map(),
};

function topicsFor(device) {
  return {
    ask: `${ROOT}/ask/${device}`, answer: `${ROOT}/answer/${device}`, source: `${ROOT}/source/${device}`,
  };
}

function banner(text) { $("banner").textContent = text || ""; $("banner").hidden = !text; }
function showWho() {
  if (!state.device) { $("who").textContent = ""; return; }
  const line = state.line === undefined ? "" : ` · ${t("line")}: ${state.line || t("plantWide")}`;
  $("who").textContent = state.device + line;
}

function login(user, password) {
  $("login-error").textContent = t("connecting");
  if (state.mqtt) state.mqtt.close();
  let connected = false, refused = false;
  const m = new Mqtt(user, password, {
    onConnack(rc) {
      if (rc !== 0) { refused = true; logout(); $("login-error").textContent = t("badLogin"); return; }
      connected = true;
      state.retryDelay = 1000;
      state.device = user;
      const tp = topicsFor(user);
      m.subscribe([tp.answer, `${tp.answer}/#`, `${ROOT}/status/+`]);
      m.publish(tp.source, JSON.stringify({ what: "device", doc: "-", locator: "-", request_id: "whoami" }));
      if ($("remember").checked) store.set("lineside.login", JSON.stringify({ user, password }));
      else sessionStorage.setItem("lineside.login", JSON.stringify({ user, password }));
      store.set("lineside.user", user);
      banner("");
      $("login-form").hidden = true; $("ask-view").hidden = false; $("logout").hidden = false;
      showWho(); renderHistory();
      if (state.pending) failPending("noAnswer");
    },
    onMessage: onMessage,
    onClose() {
      if (refused) return;
      if (!connected && !state.device) { $("login-error").textContent = t("noBox"); state.mqtt = null; return; }
      banner(t("offline"));
      if (state.pending) failPending("offline");
      setTimeout(() => { if (state.mqtt === m) login(user, password); }, state.retryDelay);
      state.retryDelay = Math.min(state.retryDelay * 2, 30000);
    },
  });
  state.mqtt = m;
  m.connect();
}

function logout() {
  if (state.mqtt) { const m = state.mqtt; state.mqtt = null; m.close(); }
  try { localStorage.removeItem("lineside.login"); sessionStorage.removeItem("lineside.login"); } catch { /* nothing kept */ }
  state.device = ""; state.line = undefined; state.role = "device";
  $("admin").hidden = true;
  showPassword("");
  $("login-form").hidden = false; $("ask-view").hidden = true; $("logout").hidden = true; $("login-error").textContent = "";
  showWho();
}

// ------------------------------------------------------------------ asking
function ask(question) {
  question = question.trim();
  if (!question) { setStatus(t("empty"), "bad"); return; }
  const rid = `${state.device}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const tp = topicsFor(state.device);
  state.pending = { rid, question, sentAt: performance.now(), text: "", sources: [], timer: setTimeout(() => failPending("noAnswer"), ANSWER_TIMEOUT_MS) };
  state.last = null;
  $("retry").hidden = true;
  showCard({ question, answer: "", sources: [], evidence: [] });
  setStatus(t("searching"));
  $("status").dataset.state = "waiting";
  $("ask").disabled = true;
  if (!state.mqtt || !state.mqtt.publish(tp.ask, JSON.stringify({ question, request_id: rid, stream: true, early_sources: true }))) failPending("offline");
}

function failPending(key) {
  if (!state.pending) return;
  clearTimeout(state.pending.timer);
  state.last = { status: "local", key, question: state.pending.question };
  state.pending = null;
  $("ask").disabled = false;
  renderStatus(state.last);
}

function onMessage(topic, bytes) {
  if (topic === `${ROOT}/internal/reply/${state.device}`) { onAdminReply(bytes); return; }
  const text = dec.decode(bytes);
  if (topic.startsWith(`${ROOT}/status/`)) {
    const service = topic.slice(`${ROOT}/status/`.length);
    state.services[service] = text.trim();
    if (service === "gateway") { state.gatewayDown = text.trim() !== "online"; banner(state.gatewayDown ? t("serviceDown") : ""); }
    renderServices();
    return;
  }
  if (topic === `${ROOT}/ingest/status`) { try { onIngestEvent(JSON.parse(text)); } catch { /* not an event */ } return; }
  let msg;
  try { msg = JSON.parse(text); } catch { return; }
  const tp = topicsFor(state.device);
  if (topic === `${tp.answer}/source`) { onSource(msg); return; }
  const p = state.pending;
  if (!p || msg.request_id !== p.rid) return;
  if (topic === `${tp.answer}/sources`) {
    p.sources = msg.sources || [];
    p.evidenceMs = Math.round(performance.now() - p.sentAt);
    showCard({ question: p.question, answer: p.text, sources: p.sources, evidence: [], early: true });
    setStatus(t("writing"));
  } else if (topic === `${tp.answer}/stream`) {
    if (msg.delta) { p.text += msg.delta; $("answer").textContent = p.text; }
  } else if (topic === tp.answer) {
    clearTimeout(p.timer);
    state.pending = null;
    $("ask").disabled = false;
    const entry = { question: p.question, at: Date.now(), answer: msg };
    state.last = { ...msg, question: p.question };
    showCard({ question: p.question, answer: msg.answer, sources: msg.sources || [], evidence: msg.evidence || [] });
    renderStatus(state.last);
    if (msg.status === "answered" || msg.status === "fallback") remember(entry);
  }
}

function setStatus(text, kind) { const el = $("status"); el.textContent = text; el.className = "status" + (kind ? " " + kind : ""); }

function renderStatus(a) {
  let text, kind = "bad", retry = true;
  if (a.status === "local") text = t(a.key);
  else if (a.status === "answered") { text = a.cached ? t("cached") : t("answered"); kind = "ok"; retry = false; }
  else if (a.status === "fallback") { text = t("fallback") + " " + (TEXT[lang].reasons[a.reason] || ""); retry = false; }
  else if (a.status === "busy") text = a.error && a.error.code === "rate_limited" ? t("rate_limited") : t("busy");
  else if (a.status === "rejected") { text = t("rejected") + (a.error ? a.error.message : ""); retry = false; }
  else text = t("error") + (a.error ? a.error.message : "");
  setStatus(text, kind);
  $("status").dataset.state = "done"; // a stable hook: the answer (or why there is none) is shown
  $("retry").hidden = !retry;
}

function showCard(c) {
  $("card").hidden = false;
  $("card-question").textContent = c.question;
  $("answer").textContent = c.answer || "";
  const ev = $("evidence");
  ev.replaceChildren();
  // Before the answer: the passages found. With the answer: its quoted lines, each with its [n].
  const items = c.early ? c.sources.slice(0, 3).map((s, i) => ({ source: i + 1, text: s.snippet })) : c.evidence;
  for (const e of items) {
    const li = document.createElement("li");
    const n = document.createElement("span"); n.className = "n"; n.textContent = `[${e.source}]`;
    const where = document.createElement("span"); where.className = "where";
    const src = c.sources[e.source - 1];
    where.textContent = src ? `${src.doc} · ${src.locator}` : "";
    li.append(n, document.createTextNode(e.text), where);
    ev.append(li);
  }
  $("evidence-title").hidden = !items.length;
  const list = $("sources");
  list.replaceChildren();
  $("sources-title").hidden = c.early || !c.sources.length;
  if (c.early) return;
  c.sources.forEach((s, i) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button"; b.dataset.testid = "source";
    b.textContent = `[${i + 1}] ${s.doc} · ${s.locator}`;
    const quote = (c.evidence || []).filter((e) => e.source === i + 1).map((e) => e.text).join(" / ");
    b.addEventListener("click", () => openSource(s, quote));
    li.append(b);
    list.append(li);
  });
}

// ------------------------------------------------------------------ history (last 50 questions, on this device)
function historyKey() { return `lineside.history.${state.device}`; }
function loadHistory() { try { return JSON.parse(store.get(historyKey()) || "[]"); } catch { return []; } }
function remember(entry) {
  const list = loadHistory().filter((e) => e.question !== entry.question);
  list.unshift(entry);
  store.set(historyKey(), JSON.stringify(list.slice(0, HISTORY_MAX)));
  renderHistory();
}
function renderHistory() {
  const ol = $("history");
  if (!ol) return;
  ol.replaceChildren();
  const list = state.device ? loadHistory() : [];
  if (!list.length) { const li = document.createElement("li"); li.textContent = t("noHistory"); ol.append(li); return; }
  for (const e of list) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = e.question;
    const when = document.createElement("small");
    when.textContent = new Date(e.at).toLocaleString(lang === "zh" ? "zh-CN" : undefined);
    b.append(when);
    b.addEventListener("click", () => {
      state.last = { ...e.answer, question: e.question };
      $("question").value = e.question;
      showCard({ question: e.question, answer: e.answer.answer, sources: e.answer.sources || [], evidence: e.answer.evidence || [] });
      renderStatus(state.last);
      window.scrollTo(0, 0);
    });
    li.append(b);
    ol.append(li);
  }
}

// ------------------------------------------------------------------ sources
function openSource(src, quote) {
  const rid = `src-${Date.now().toString(36)}`;
  state.shown = rid;
  $("source-title").textContent = `${src.doc} · ${src.locator}`;
  const body = $("source-body");
  body.replaceChildren(document.createTextNode(t("loading")));
  $("source-view").hidden = false;
  $("source-close").focus();
  state.mqtt.publish(topicsFor(state.device).source, JSON.stringify({ request_id: rid, doc: src.doc, locator: src.locator, quote }));
}

function onSource(v) {
  if (v.kind === "device") {
    state.line = v.line || "";
    state.role = v.role || "device";
    showWho();
    if (state.role === "operator") openAdmin();
    return;
  }
  if (v.request_id !== state.shown) return;
  const body = $("source-body");
  body.replaceChildren();
  if (v.kind === "page") {
    const page = document.createElement("div"); page.className = "page";
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + v.image_png; img.alt = `${v.doc} · ${v.locator}`; img.width = v.width; img.height = v.height;
    page.append(img);
    for (const [x0, y0, x1, y1] of v.marks || []) {
      const m = document.createElement("div"); m.className = "mark";
      Object.assign(m.style, { left: `${x0 * 100}%`, top: `${y0 * 100}%`, width: `${(x1 - x0) * 100}%`, height: `${(y1 - y0) * 100}%` });
      page.append(m);
    }
    body.append(page);
    const first = page.querySelector(".mark");
    if (first) img.addEventListener("load", () => first.scrollIntoView({ block: "center" }));
  } else if (v.kind === "table") {
    // The row itself as "column: value" lines (readable on a phone), then the table around it.
    const hit = v.rows.find((r) => r.n === v.row);
    const dl = document.createElement("dl"); dl.className = "row-card";
    v.header.forEach((h, i) => {
      const dt = document.createElement("dt"); dt.textContent = h;
      const dd = document.createElement("dd"); dd.textContent = hit ? hit.cells[i] ?? "" : "";
      dl.append(dt, dd);
    });
    body.append(dl);
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const h of ["#", ...v.header]) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
    const tb = table.createTBody();
    for (const r of v.rows) {
      const tr = tb.insertRow();
      if (r.n === v.row) tr.className = "hit";
      const no = tr.insertCell(); no.textContent = String(r.n); no.className = "rowno";
      for (const c of r.cells) tr.insertCell().textContent = c;
    }
    body.append(table);
  } else if (v.kind === "text") {
    const div = document.createElement("div"); div.className = "text"; div.textContent = v.text;
    body.append(div);
  } else {
    body.append(document.createTextNode(t("sourceError") + (v.error ? v.error.message : "")));
  }
}

// ------------------------------------------------------------------ operator section (operator accounts only; the broker's ACL decides)
const PIECE_BYTES = 256 * 1024; // as `lineside ingest`: far below the broker's packet limit

function openAdmin() {
  $("admin").hidden = false;
  state.mqtt.subscribe([`${ROOT}/internal/reply/${state.device}`, `${ROOT}/ingest/status`]);
  renderServices();
  loadDocuments();
  loadDevices();
}

function renderServices() {
  const ul = $("services");
  if (!ul || $("admin").hidden) return;
  ul.replaceChildren();
  for (const name of Object.keys(state.services).sort()) {
    const li = document.createElement("li");
    li.dataset.testid = "service";
    const up = state.services[name] === "online";
    li.className = up ? "up" : "down";
    li.textContent = `${name}: ${up ? t("online") : t("offlineState")}`;
    ul.append(li);
  }
}

function request(topic, message) {
  const rid = message.request_id;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { state.waiting.delete(rid); reject(new Error(t("noReply"))); }, 15000);
    state.waiting.set(rid, (reply) => { clearTimeout(timer); resolve(reply); });
    state.mqtt.publish(topic, concat(mpEncode(message)));
  });
}

function onAdminReply(bytes) {
  let msg;
  try { msg = mpDecode(bytes); } catch { return; }
  const done = msg && state.waiting.get(msg.request_id);
  if (done) { state.waiting.delete(msg.request_id); done(msg); }
}

async function loadDocuments() {
  const rid = `kb-${Date.now().toString(36)}`;
  const ol = $("documents");
  try {
    const reply = await request(`${ROOT}/internal/retriever/kb`, { type: "kb.list.v1", request_id: rid, reply_to: `${ROOT}/internal/reply/${state.device}` });
    ol.replaceChildren();
    for (const d of reply.documents) {
      const li = document.createElement("li");
      li.dataset.testid = "document";
      const name = document.createElement("span"); name.className = "doc"; name.textContent = d.doc;
      const info = document.createElement("small");
      info.textContent = `${d.chunks} ${t("chunks")} · ${t("version")} ${String(d.version).slice(0, 12)} · ${new Date(d.ingested_at * 1000).toLocaleString(lang === "zh" ? "zh-CN" : undefined)}`;
      const del = document.createElement("button");
      del.type = "button"; del.className = "secondary"; del.dataset.testid = "delete"; del.textContent = t("delete");
      del.addEventListener("click", () => {
        if (del.dataset.armed) { deleteDocument(d.doc); del.disabled = true; return; }
        del.dataset.armed = "1"; del.textContent = t("deleteConfirm"); // a second tap deletes
      });
      li.append(name, info, del);
      ol.append(li);
    }
    if (!reply.documents.length) ol.textContent = t("noDocuments");
  } catch (err) {
    ol.textContent = `${t("documentsFailed")} ${err.message}`;
  }
}

function deleteDocument(doc) {
  const rid = `del-${Date.now().toString(36)}`;
  state.upload = { rid, name: doc, deleting: true };
  $("upload-status").textContent = `${doc}: ${t("deleting")}`;
  state.mqtt.publish(`${ROOT}/internal/retriever/index`, concat(mpEncode({ type: "index.delete.v1", request_id: rid, doc })));
}

async function hex(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function upload(file) {
  const status = $("upload-status"), bar = $("upload-progress");
  if (!file) { status.textContent = t("chooseFile"); return; }
  const data = new Uint8Array(await file.arrayBuffer());
  const rid = `up-${Date.now().toString(36)}`;
  const total = Math.max(1, Math.ceil(data.length / PIECE_BYTES));
  const sha256 = await hex(data);
  state.upload = { rid, name: file.name };
  bar.hidden = false; bar.max = Math.max(1, data.length); bar.value = 0;
  $("upload").disabled = true;
  try {
    for (let seq = 0; seq < total; seq++) {
      if (state.upload.failed) return;
      const piece = data.subarray(seq * PIECE_BYTES, (seq + 1) * PIECE_BYTES);
      const part = { type: "ingest.part.v1", request_id: rid, name: file.name, seq, total, size: data.length, sha256, data: piece, line: null };
      await state.mqtt.publishAcked(`${ROOT}/internal/ingest/document`, concat(mpEncode(part)));
      bar.value = Math.min(data.length, (seq + 1) * PIECE_BYTES);
      status.textContent = `${file.name}: ${t("sending")} ${Math.round((100 * bar.value) / bar.max)}%`;
    }
  } catch (err) {
    status.textContent = `${file.name}: ${t("uploadFailed")} ${err.message}`;
  } finally {
    $("upload").disabled = false;
  }
}

function onIngestEvent(ev) {
  const up = state.upload;
  if (!up || ev.request_id !== up.rid) return;
  const status = $("upload-status");
  const stage = t(`stage_${ev.stage}`);
  if (ev.stage === "failed") { up.failed = true; status.textContent = `${ev.doc}: ${stage} ${ev.reason || ""}`; return; }
  status.textContent = ev.stage === "indexed" ? `${ev.doc}: ${stage} (${ev.chunks} ${t("chunks")})` : `${ev.doc}: ${stage}`;
  if (["indexed", "unchanged", "deleted"].includes(ev.stage)) { $("upload-progress").value = $("upload-progress").max; loadDocuments(); }
}

// ------------------------------------------------------------------ device accounts (operator accounts only; the web server answers)
// The request goes to the operator's own topic (the ACL allows no other), the reply to its inbox.
// A new password is only ever put on the screen: never into storage, gone on the next change or logout.
function devicesRequest(message) {
  return request(`${ROOT}/internal/admin/devices/${state.device}`, { request_id: `dev-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, ...message });
}

function showPassword(password) {
  $("device-password").textContent = password;
  $("device-secret").hidden = !password;
}

function renderDevices(devices) {
  const ol = $("devices");
  ol.replaceChildren();
  for (const d of devices) {
    const li = document.createElement("li");
    li.dataset.testid = "device";
    const name = document.createElement("span"); name.className = "doc"; name.textContent = d.name;
    const info = document.createElement("small");
    info.textContent = [`${t("line")}: ${d.line || t("plantWide")}`, ...(d.role === "operator" ? [t("roleOperator")] : []),
      ...(d.name === state.device ? [t("you")] : [])].join(" · ");
    li.append(name, info);
    if (d.name !== state.device) {
      const del = document.createElement("button");
      del.type = "button"; del.className = "secondary"; del.dataset.testid = "device-remove"; del.textContent = t("remove");
      del.addEventListener("click", () => {
        if (del.dataset.armed) { del.disabled = true; removeDevice(d.name); return; }
        del.dataset.armed = "1"; del.textContent = t("removeConfirm"); // a second tap removes
      });
      li.append(del);
    }
    ol.append(li);
  }
}

async function devicesDo(message, busy, done) {
  const status = $("device-status");
  showPassword("");
  status.textContent = `${message.name ? message.name + ": " : ""}${busy}`;
  try {
    const reply = await devicesRequest(message);
    renderDevices(reply.devices || []);
    if (reply.password) { showPassword(reply.password); $("device-secret").scrollIntoView({ block: "center" }); }
    // A change that was made may still carry a note (the broker could not be told to reload).
    const ok = message.type === "devices.list.v1" ? !reply.error : !!reply.done;
    status.textContent = ok ? (done ? `${reply.name}: ${done}` : "") + (reply.error ? ` (${reply.error})` : "") : `${t("devicesFailed")} ${reply.error}`;
    return ok;
  } catch (err) {
    status.textContent = `${t("devicesFailed")} ${err.message}`;
    return false;
  }
}

function loadDevices() { return devicesDo({ type: "devices.list.v1" }, "", ""); }

async function addDevice() {
  const name = $("device-name").value.trim(), line = $("device-line").value.trim();
  $("device-add").disabled = true;
  if (await devicesDo({ type: "devices.add.v1", name, line: line || null }, t("adding"), t("added"))) { $("device-name").value = ""; $("device-line").value = ""; }
  $("device-add").disabled = false;
}

function removeDevice(name) { return devicesDo({ type: "devices.remove.v1", name }, t("removing"), t("removed")); }

// ------------------------------------------------------------------ wiring
document.addEventListener("DOMContentLoaded", () => {
  applyLanguage();
  $("lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; store.set("lineside.lang", lang); applyLanguage(); });
  $("login-user").value = store.get("lineside.user") || "";
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("login-user").value.trim(), $("login-password").value); });
  $("logout").addEventListener("click", logout);
  $("ask-form").addEventListener("submit", (ev) => { ev.preventDefault(); ask($("question").value); });
  // Enter asks, Shift+Enter is a new line; never while an input method is composing (Chinese pinyin).
  $("question").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) { ev.preventDefault(); if (!$("ask").disabled) ask($("question").value); }
  });
  $("retry").addEventListener("click", () => { if (state.last) ask(state.last.question); });
  $("upload-form").addEventListener("submit", (ev) => { ev.preventDefault(); upload($("upload-file").files[0]); });
  $("refresh").addEventListener("click", loadDocuments);
  $("device-form").addEventListener("submit", (ev) => { ev.preventDefault(); addDevice(); });
  $("source-close").addEventListener("click", () => { $("source-view").hidden = true; state.shown = null; });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { $("source-view").hidden = true; state.shown = null; } });
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem("lineside.login") || store.get("lineside.login") || "null"); } catch { saved = null; }
  if (saved && saved.user) { $("remember").checked = !!store.get("lineside.login"); login(saved.user, saved.password); }
});
