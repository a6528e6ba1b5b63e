// GAIA live page: one WebSocket session, deltas applied by version, resume with last_seq (docs/protocol.md).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { ws: null, view: null, version: -1, lastSeq: null, players: new Map(), nextId: 1,
                wanted: false, retryMs: 500, me: null, chatId: null,
                conversation: `page-${Math.random().toString(36).slice(2)}` };

function log(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(li);
  while ($("log").children.length > 300) $("log").lastChild.remove();
}

function setStatus(name) {
  $("status").dataset.state = name;
  $("status").textContent = name;
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
}

function act(action, args) {
  send({ type: "action", id: `a${state.nextId++}`, action, ...args });
}

function connect() {
  const token = $("token").value.trim();
  const experience = $("experience").value.trim();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams({ token, experience });
  if (state.lastSeq !== null) query.set("last_seq", state.lastSeq);
  state.wanted = true;
  const ws = new WebSocket(`${scheme}://${location.host}/ws/experience?${query}`);
  state.ws = ws;
  ws.onopen = () => {
    state.retryMs = 500; $("connect").disabled = true; $("disconnect").disabled = false;
    $("say").disabled = false; $("say-send").disabled = false;
  };
  ws.onmessage = (msg) => onFrame(JSON.parse(msg.data));
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    log("error", `closed ${ev.code} ${ev.reason || ""}`);
    if (ev.code === 4401 || ev.code === 4403 || !state.wanted) {
      setStatus("offline");
      $("connect").disabled = false; $("disconnect").disabled = true;
      return;
    }
    setStatus("reconnecting");
    setTimeout(() => state.wanted && connect(), state.retryMs);  // resumes from last_seq: nothing is lost
    state.retryMs = Math.min(state.retryMs * 2, 8000);
  };
}

function onFrame(frame) {
  switch (frame.type) {
    case "connected":
      state.me = frame.user_id;
      setStatus("connected");
      log("connected", `connected as ${frame.user_id} (${frame.connection_id})`);
      break;
    case "area_of_interest":
      state.view = frame; state.version = frame.snapshot_version;
      state.players = new Map((frame.players || []).map((p) => [p.user_id, p.area_id]));
      log("snapshot", `snapshot at version ${frame.snapshot_version}`);
      break;
    case "world_update":
      state.lastSeq = frame.seq;
      applyUpdate(frame);
      log("world_update", `#${frame.seq} v${frame.snapshot_version} ${frame.actor_id}: ${describe(frame.changes)}`);
      break;
    case "presence":
      if (frame.seq) state.lastSeq = frame.seq;
      applyPresence(frame);
      break;
    case "presence_batch":
      if (frame.seq) state.lastSeq = frame.seq;
      frame.changes.filter((c) => c.user_id !== state.me).forEach(applyPresence);
      break;
    case "action_response":
      log("action_response", `${frame.action}: ${frame.message}`);
      if (frame.action === "talk") $("dialogue").textContent = frame.message;
      break;
    case "resumed":
      log("resumed", `resumed: ${frame.replayed} missed events replayed (${frame.from_seq}..${frame.to_seq})`);
      break;
    case "resync_required":
      log("error", `resync required: ${frame.reason}`);
      break;
    case "chat_chunk":
      if (frame.id !== state.chatId) break;
      $("narrative").textContent += frame.delta;
      break;
    case "chat_done":
      log("chat", `${frame.action || "chat"}: ${$("narrative").textContent} (${frame.total_time_ms} ms)`);
      break;
    case "error":
      if (frame.id === state.chatId) $("narrative").textContent = `${frame.code}: ${frame.message}`;
      log("error", `${frame.code}: ${frame.message}`);
      break;
  }
  render();
}

function areaName(areaId) {
  const area = state.view && state.view.areas[areaId];
  return area ? area.name : areaId;
}

function applyPresence(change) {
  if (change.event === "leave") state.players.delete(change.user_id);
  else state.players.set(change.user_id, change.area_id);
  const verb = { join: "joined in", leave: "left from", move: "moved to" }[change.event] || change.event;
  log("presence", `${change.user_id} ${verb} ${areaName(change.area_id)}`);
}

function playersIn(areaId) {
  return [...state.players].filter(([, area]) => area === areaId).map(([user]) => user).sort();
}

function applyUpdate(event) {
  if (!state.view || event.snapshot_version <= state.version) return;
  if (event.base_version !== state.version) {  // a hole in the chain: ask for a fresh snapshot
    send({ type: "get_state" });
    return;
  }
  for (const change of event.changes) applyChange(state.view, change);
  state.version = event.snapshot_version;
}

function collectionOf(view, change) {
  if (change.area_id == null) return change.path === "player.inventory" ? view.player.inventory : null;
  const spot = ((view.areas[change.area_id] || {}).spots || {})[change.spot_id];
  return spot ? spot.items : null;
}

function applyChange(view, change) {
  const items = collectionOf(view, change);
  if (change.operation === "add" && items) items.push(change.item || change.value);
  else if (change.operation === "remove" && items) {
    const keep = items.filter((i) => i.instance_id !== change.instance_id);
    items.splice(0, items.length, ...keep);
  } else if (change.operation === "update" && change.instance_id && items) {
    const at = items.findIndex((i) => i.instance_id === change.instance_id);
    if (at >= 0) items[at] = change.item;
  } else if (change.operation === "update") {
    const keys = change.path.split(".");
    let target = view;
    for (const key of keys.slice(0, -1)) target = target[key] = target[key] || {};
    target[keys[keys.length - 1]] = change.value;
  }
}

function describe(changes) {
  if (!changes.length) return "(nothing visible changed)";
  return changes.map((c) => `${c.operation} ${c.instance_id || c.path || ""}`).join(", ");
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.onclick = onClick;
  return b;
}

function listItem(text, ...buttons) {
  const li = document.createElement("li");
  li.textContent = text;
  buttons.forEach((b) => li.append(b));
  return li;
}

function render() {
  const view = state.view;
  $("cursor").textContent = `seq ${state.lastSeq ?? "-"} · version ${state.version}`;
  if (!view) return;
  const here = view.areas[view.player.current_area];
  $("area-name").textContent = here.name;
  $("area-description").textContent = here.description;
  const env = view.environment || {};
  $("environment").textContent = `Weather: ${env.weather ?? "?"} · Time of day: ${env.time_of_day ?? "?"}`;
  $("exits").replaceChildren(...here.exits.map((exit) =>
    button(`go to ${view.areas[exit] ? view.areas[exit].name : exit}`, () => act("go", { destination: exit }))));
  const items = [];
  for (const spot of Object.values(here.spots)) {
    for (const item of spot.items) {
      const li = listItem(`${item.semantic_name} (${spot.name})`,
        button("collect", () => act("collect_item", { instance_id: item.instance_id })));
      li.dataset.instance = item.instance_id;
      items.push(li);
    }
  }
  $("items").replaceChildren(...items);
  const npcs = Object.values(view.npcs || {}).filter((n) => n.area_id === here.id);
  $("npcs").replaceChildren(...npcs.map((n) => listItem(n.name,
    button("talk", () => act("talk", { npc_id: n.id })))));
  $("inventory").replaceChildren(...view.player.inventory.map((item) => {
    const li = listItem(item.semantic_name, button("drop", () => act("drop_item", { instance_id: item.instance_id })));
    li.dataset.instance = item.instance_id;
    return li;
  }));
  const you = (p) => (p === state.me ? `${p} (you)` : p);
  state.players.set(state.me, view.player.current_area);  // one's own moves come as deltas, not presence
  $("players-here").replaceChildren(...playersIn(here.id).map((p) => listItem(you(p))));
  $("players").replaceChildren(...[...state.players.keys()].sort().map((p) => {
    const li = listItem(`${you(p)} · ${areaName(state.players.get(p))}`);
    li.dataset.user = p;
    return li;
  }));
  $("map").replaceChildren(...Object.values(view.areas).map((area) => {
    const who = Object.values(view.npcs || {}).filter((n) => n.area_id === area.id).map((n) => n.name);
    const count = Object.values(area.spots).reduce((n, s) => n + s.items.length, 0);
    const li = listItem(`${area.id === here.id ? "▶ " : ""}${area.name}: ${count} items${who.length ? ", " + who.join(", ") : ""}`);
    const people = playersIn(area.id);
    if (people.length) {
      const small = document.createElement("small");
      small.textContent = ` · players: ${people.map(you).join(", ")}`;
      li.append(small);
    }
    li.dataset.area = area.id;
    li.className = area.id === here.id ? "here" : "";
    return li;
  }));
}

$("chat").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const message = $("say").value.trim();
  if (!message) return;
  state.chatId = `c${state.nextId++}`;
  $("narrative").textContent = "";
  send({ type: "chat", id: state.chatId, message, conversation_id: state.conversation });
  $("say").value = "";
});
$("login").addEventListener("submit", (ev) => { ev.preventDefault(); state.lastSeq = null; connect(); });
$("disconnect").addEventListener("click", () => {
  state.wanted = false;
  if (state.ws) state.ws.close(1000, "bye");
});
// A link with ?token= connects by itself; without one the page waits for a token to be typed in (it
// never remembers one: a shared computer must not log the next visitor in as the last).
const fromUrl = new URLSearchParams(location.search);
if (fromUrl.get("experience")) $("experience").value = fromUrl.get("experience");
if (fromUrl.get("token")) {
  $("token").value = fromUrl.get("token");
  history.replaceState(null, "", location.pathname);  // the token leaves the address bar and history
  connect();
}
