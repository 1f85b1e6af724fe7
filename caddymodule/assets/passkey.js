// caddy-jit pages: passkeys (WebAuthn). A form with a [data-passkey-form] block gets a
// working passkey button: the script asks POST /.jit/passkey for a ceremony bound to
// the signed-in user, this site and the form, has the authenticator answer it, and
// submits the form with the answer in two hidden fields, which the server checks.
// Submitting such a form without a code uses the passkey too, as the button pressed:
// on the approvals page, Approve or Deny. Without this script every page still works
// with an authenticator code.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials || !window.fetch) return;

  function toBuffer(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }
  function toBase64URL(buf) {
    var bytes = new Uint8Array(buf), s = "";
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  // The server's options carry binary values in base64url (go-webauthn's JSON).
  function decodeOptions(o) {
    var pk = o.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    if (pk.user) pk.user.id = toBuffer(pk.user.id);
    [pk.allowCredentials, pk.excludeCredentials].forEach(function (list) {
      (list || []).forEach(function (c) { c.id = toBuffer(c.id); });
    });
    return { publicKey: pk };
  }
  function encodeCredential(c) {
    var r = c.response, out = {
      id: c.id, rawId: toBase64URL(c.rawId), type: c.type,
      response: { clientDataJSON: toBase64URL(r.clientDataJSON) },
      clientExtensionResults: c.getClientExtensionResults ? c.getClientExtensionResults() : {}
    };
    if (c.authenticatorAttachment) out.authenticatorAttachment = c.authenticatorAttachment;
    if (r.attestationObject) {
      out.response.attestationObject = toBase64URL(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = toBase64URL(r.authenticatorData);
      out.response.signature = toBase64URL(r.signature);
      if (r.userHandle) out.response.userHandle = toBase64URL(r.userHandle);
    }
    return JSON.stringify(out);
  }
  function field(form, name) { return form.querySelector("[name='" + name + "']"); }
  function submitButtons(form) {
    return form.querySelectorAll("button[type=submit], button:not([type]), input[type=submit]");
  }

  // valid checks every field of the form except the code, which the passkey replaces.
  function valid(form, kind) {
    var code = field(form, "code");
    if (!code || kind === "register") return form.reportValidity();
    var required = code.required;
    code.required = false;
    var ok = form.reportValidity();
    code.required = required;
    return ok;
  }

  // start runs the ceremony and submits the form as submitter (a submit button or
  // null), whose name and value the form then carries, as a press of it would.
  function start(block, button, status, submitter) {
    var form = block.closest("form"), kind = button.getAttribute("data-passkey");
    if (!valid(form, kind)) return;
    var body = new URLSearchParams(), endpoint = "/.jit/passkey";
    body.set("csrf", field(form, "csrf").value);
    body.set("kind", kind);
    body.set("form", block.getAttribute("data-passkey-form"));
    if (kind === "register") {
      // A registration is proven by a current code, or by the enrollment link of this page.
      var code = field(form, "code"), token = field(form, "token");
      if (code) body.set("code", code.value);
      if (token) body.set("token", token.value);
      // The link's binding cookie is sent only below /.jit/enroll.
      if (token) endpoint = "/.jit/enroll/passkey";
    }
    button.disabled = true;
    status.textContent = kind === "register" ? "Follow your browser's prompt to create the passkey." : "Follow your browser's prompt to use your passkey.";
    fetch(endpoint, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" }
    }).then(function (res) {
      return res.json().then(function (answer) {
        // Our answers say why in error; the refusal limit's 429 in message.
        if (!res.ok) throw new Error(answer.message || answer.error || "the server refused: " + res.status);
        return answer;
      });
    }).then(function (answer) {
      var options = decodeOptions(answer.options);
      var made = kind === "register" ? navigator.credentials.create(options) : navigator.credentials.get(options);
      return made.then(function (credential) {
        if (!credential) throw new Error("no passkey was chosen");
        field(form, "passkey_ceremony").value = answer.ceremony;
        field(form, "passkey_response").value = encodeCredential(credential);
        var code = field(form, "code");
        if (code && kind !== "register") code.value = "";
        if (submitter && submitter.name) {
          var pressed = document.createElement("input");
          pressed.type = "hidden";
          pressed.name = submitter.name;
          pressed.value = submitter.value;
          form.appendChild(pressed);
        }
        status.textContent = "Checking…";
        form.submit();
      });
    }).catch(function (err) {
      button.disabled = false;
      status.textContent = err && err.name === "NotAllowedError"
        ? "The passkey prompt was cancelled or timed out. Press the button to try again."
        : "Passkey not used: " + (err && err.message ? err.message : err);
    });
  }

  var blocks = document.querySelectorAll("[data-passkey-form]");
  for (var i = 0; i < blocks.length; i++) {
    (function (block) {
      var button = block.querySelector("[data-passkey]");
      if (!button) return;
      var status = block.querySelector(".passkey-status") || document.createElement("p");
      var form = block.closest("form"), submits = submitButtons(form);
      if (button.getAttribute("data-passkey") === "login") {
        // A submit without a code is a submit with the passkey.
        form.addEventListener("submit", function (ev) {
          var code = field(form, "code");
          if (field(form, "passkey_response").value || (code && code.value.trim())) return;
          ev.preventDefault();
          if (!button.disabled) start(block, button, status, ev.submitter || null);
        });
      }
      if (submits.length > 1) {
        // The button would not say which of the form's buttons it stands for.
        status.textContent = "Press " + Array.prototype.map.call(submits, function (b) {
          return (b.textContent || b.value).trim();
        }).join(" or ") + ": your browser then asks for your passkey.";
        return;
      }
      button.hidden = false;
      button.addEventListener("click", function () { start(block, button, status, submits[0] || null); });
    })(blocks[i]);
  }
})();
