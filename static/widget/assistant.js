/*
 * The embeddable bot assistant.
 *
 *   <script src="https://bots.example.com/static/widget/assistant.js" data-brand="techpro" async></script>
 *
 * Speaks the bot-assistant protocol (docs/assistant.md) to the server the script came from.
 * The visitor's session id is kept in localStorage (third-party cookies are unreliable) and
 * passed as ?sid=; on reconnect ?after=<last seq> asks only for what was missed.
 *
 * Structure: `state` (plain data, one reducer per server message) is kept apart from the DOM
 * code (`ui`); `dispatch` is the one place server messages enter. Text typed by visitors and
 * streamed by models is only ever set as textContent; bot HTML written by staff is sanitized on
 * the server when a flow is published and filtered again here through an allowlist.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script) { return; }
  var brand = script.getAttribute("data-brand") || "techpro";
  var origin = new URL(script.src, location.href);
  var wsBase = (origin.protocol === "https:" ? "wss://" : "ws://") + origin.host;
  var storageKey = "botsite-assistant:" + brand;

  // ---- state: what the conversation looks like, no DOM here ---------------------------------
  var state = {
    sid: load().sid || null,
    lastSeq: 0,
    items: [],          // {type: "bot"|"user"|"choices"|"picked"|"stream"|"error", ...}
    chatSession: null,  // {sessionId, prompt} while the visitor may type
    streams: {},        // streamId -> item
    connected: false,
  };

  function load() {
    try { return JSON.parse(localStorage.getItem(storageKey) || "{}"); } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(storageKey, JSON.stringify({ sid: state.sid })); } catch (e) { /* private mode */ }
  }

  var reducers = {
    Session: function (m) { state.sid = m.sid; save(); },
    BotText: function (m) { state.items.push({ type: "bot", html: m.content }); },
    ChoiceRequest: function (m) {
      state.items.push({ type: "bot", text: m.question });
      state.items.push({ type: "choices", groupId: m.groupId, choices: m.choices, open: true });
    },
    ChoiceResponse: function (m) { closeChoices(m.groupId); state.items.push({ type: "picked", text: m.content || m.itemId }); },
    UserText: function (m) { state.items.push({ type: "user", text: m.content }); },
    StartChatSession: function (m) {
      if (m.chatText) { state.items.push({ type: "bot", text: m.chatText }); }
      state.chatSession = { sessionId: m.sessionId, prompt: m.chatPrompt || "Type your question here..." };
    },
    EndChatSession: function () { state.chatSession = null; },
    BotStream: function (m) {
      var item = state.streams[m.streamId];
      if (!item) { item = state.streams[m.streamId] = { type: "stream", text: "", done: false }; state.items.push(item); }
      item.text += m.delta;
    },
    BotStreamEnd: function (m) {
      var item = state.streams[m.streamId];
      if (!item) { item = state.streams[m.streamId] = { type: "stream", text: "" }; state.items.push(item); }
      item.text = m.content; item.done = true; item.products = m.products || [];
    },
    Error: function (m) { state.items.push({ type: "error", text: m.message }); },
  };

  function closeChoices(groupId) {
    for (var i = state.items.length - 1; i >= 0; i--) {
      var item = state.items[i];
      if (item.type === "choices" && item.groupId === groupId && item.open) { item.open = false; return; }
    }
  }

  function dispatch(message) {
    if (typeof message.seq === "number") {
      if (message.seq <= state.lastSeq) { return; }
      state.lastSeq = message.seq;
    }
    var reduce = reducers[message.kind];
    if (reduce) { reduce(message); ui.render(); }
  }

  // ---- connection ---------------------------------------------------------------------------
  var socket = null, retry = 500;

  function connect() {
    var url = wsBase + "/ws/assistant/" + encodeURIComponent(brand) + "/";
    var params = [];
    if (state.sid) { params.push("sid=" + encodeURIComponent(state.sid)); }
    if (state.lastSeq) { params.push("after=" + state.lastSeq); }
    socket = new WebSocket(url + (params.length ? "?" + params.join("&") : ""));
    socket.onopen = function () { state.connected = true; retry = 500; ui.render(); };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      dispatch(message);
    };
    socket.onclose = function (event) {
      state.connected = false; ui.render();
      if (event.code === 4404 || event.code === 4403) { return; }  // no such brand / not allowed here
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  function send(message) {
    if (!socket || socket.readyState !== WebSocket.OPEN) { return false; }
    message.clientId = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    socket.send(JSON.stringify(message));
    return true;
  }

  function pick(groupId, choice) {
    if (send({ kind: "ChoiceResponse", groupId: groupId, itemId: choice.itemId, content: choice.content })) {
      closeChoices(groupId);
      state.items.push({ type: "picked", text: choice.content });
      ui.render();
    }
  }

  function say(text) {
    if (!state.chatSession || !text.trim()) { return; }
    if (send({ kind: "UserText", sessionId: state.chatSession.sessionId, content: text })) {
      state.items.push({ type: "user", text: text });
      ui.render();
    }
  }

  function reset() {
    if (send({ kind: "ResetSession" })) {
      state.items = []; state.streams = {}; state.lastSeq = 0; state.chatSession = null;
      ui.render();
    }
  }

  // ---- ui: DOM only -------------------------------------------------------------------------
  var ALLOWED_TAGS = { A: 1, B: 1, STRONG: 1, I: 1, EM: 1, U: 1, BR: 1, P: 1, UL: 1, OL: 1, LI: 1, CODE: 1 };

  function sanitized(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    (function clean(node) {
      Array.prototype.slice.call(node.childNodes).forEach(function (child) {
        if (child.nodeType === 1) {
          if (!ALLOWED_TAGS[child.tagName]) { child.replaceWith(document.createTextNode(child.textContent)); return; }
          Array.prototype.slice.call(child.attributes).forEach(function (attr) {
            var keep = child.tagName === "A" && attr.name === "href" && /^(https?:|mailto:)/i.test(attr.value);
            if (!keep) { child.removeAttribute(attr.name); }
          });
          if (child.tagName === "A") { child.setAttribute("target", "_blank"); child.setAttribute("rel", "noopener noreferrer nofollow"); }
          clean(child);
        } else if (child.nodeType !== 3) {
          child.remove();
        }
      });
    })(template.content);
    return template.content;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function formatPrice(price) {
    try { return new Intl.NumberFormat("id-ID", { style: "currency", currency: "IDR", maximumFractionDigits: 0 }).format(price); }
    catch (e) { return String(price); }
  }

  var ui = (function () {
    var host = el("div"); host.id = "botsite-assistant";
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var style = el("style");
    style.textContent = [
      ":host{all:initial}",
      ".wrap{position:fixed;bottom:20px;right:24px;font:14px/1.4 system-ui,sans-serif;color:#222;z-index:2147483000}",
      ".open{width:52px;height:52px;border-radius:50%;border:0;background:#0a7ea4;color:#fff;font-size:24px;cursor:pointer;box-shadow:0 2px 8px #0004}",
      ".panel{display:none;width:360px;max-width:calc(100vw - 32px);height:520px;max-height:calc(100vh - 40px);background:#fff;border-radius:10px;box-shadow:0 6px 24px #0005;flex-direction:column;overflow:hidden}",
      ".wrap.shown .panel{display:flex}.wrap.shown .open{display:none}",
      ".head{background:#0a7ea4;color:#fff;padding:10px 12px;display:flex;align-items:center;gap:8px;font-weight:600}",
      ".head .dot{width:9px;height:9px;border-radius:50%;background:#f55}.head .dot.on{background:#7f7}",
      ".head .grow{flex:1}.head button{background:none;border:0;color:#fff;cursor:pointer;font-size:16px}",
      ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:6px;background:#f7f9fa}",
      ".bot,.user,.picked,.error{max-width:85%;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word}",
      ".bot{background:#fff;border:1px solid #dde3e6;align-self:flex-start}",
      ".user,.picked{background:#0a7ea4;color:#fff;align-self:flex-end}",
      ".error{background:#fff1f0;color:#a8071a;border:1px solid #ffccc7;align-self:center;font-size:12px}",
      ".choices{display:flex;flex-wrap:wrap;gap:6px}",
      ".choices button{border:1px solid #0a7ea4;background:#fff;color:#0a7ea4;border-radius:16px;padding:6px 12px;cursor:pointer}",
      ".choices button:hover{background:#0a7ea4;color:#fff}",
      ".card{border:1px solid #dde3e6;border-radius:8px;background:#fff;padding:8px;margin-top:6px}",
      ".card .name{font-weight:600}.card .price{color:#0a7ea4}.card .off{color:#a8071a;font-size:12px}",
      ".foot{border-top:1px solid #dde3e6;display:flex}",
      ".foot input{flex:1;border:0;padding:12px;font:inherit;outline:none}.foot button{border:0;background:none;color:#0a7ea4;padding:0 12px;cursor:pointer}",
    ].join("\n");
    var wrap = el("div", "wrap");
    var openButton = el("button", "open", "💬"); openButton.setAttribute("aria-label", "Open the assistant");
    var panel = el("div", "panel");
    var head = el("div", "head");
    var dot = el("span", "dot");
    var title = el("span", "grow", "Assistant");
    var resetButton = el("button", "reset", "↻"); resetButton.title = "Start over";
    var closeButton = el("button", "close", "✕"); closeButton.title = "Close";
    head.append(dot, title, resetButton, closeButton);
    var log = el("div", "log"); log.setAttribute("aria-live", "polite");
    var foot = el("form", "foot");
    var input = el("input"); input.disabled = true; input.placeholder = "Choose an option"; input.maxLength = 1000;
    var sendButton = el("button", "", "Send"); sendButton.type = "submit";
    foot.append(input, sendButton);
    panel.append(head, log, foot);
    wrap.append(openButton, panel);
    root.append(style, wrap);

    openButton.addEventListener("click", function () { wrap.classList.add("shown"); if (!socket) { connect(); } });
    closeButton.addEventListener("click", function () { wrap.classList.remove("shown"); });
    resetButton.addEventListener("click", reset);
    foot.addEventListener("submit", function (event) { event.preventDefault(); say(input.value); input.value = ""; });

    function productCard(product) {
      var card = el("div", "card");
      card.append(el("div", "name", product.name), el("div", "price", formatPrice(product.price)));
      if (product.description) { card.append(el("div", "", product.description)); }
      if (product.availability === false) { card.append(el("div", "off", "Currently unavailable")); }
      return card;
    }

    function render() {
      dot.className = "dot" + (state.connected ? " on" : "");
      log.textContent = "";
      state.items.forEach(function (item) {
        if (item.type === "bot") {
          var bubble = el("div", "bot");
          if (item.html !== undefined) { bubble.append(sanitized(item.html)); } else { bubble.textContent = item.text; }
          log.append(bubble);
        } else if (item.type === "choices") {
          if (!item.open) { return; }
          var box = el("div", "choices");
          item.choices.forEach(function (choice) {
            var button = el("button", "", choice.content);
            button.addEventListener("click", function () { pick(item.groupId, choice); });
            box.append(button);
          });
          log.append(box);
        } else if (item.type === "stream") {
          var answer = el("div", "bot", item.text);
          (item.products || []).forEach(function (p) { answer.append(productCard(p)); });
          log.append(answer);
        } else {
          log.append(el("div", item.type, item.text));
        }
      });
      input.disabled = !state.chatSession;
      input.placeholder = state.chatSession ? state.chatSession.prompt : "Choose an option";
      log.scrollTop = log.scrollHeight;
    }

    function mount() { document.body.appendChild(host); }
    if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
    return { render: render, open: function () { openButton.click(); } };
  })();

  window.BotsiteAssistant = { open: ui.open, reset: reset };
  if (script.hasAttribute("data-open")) { ui.open(); }
})();
