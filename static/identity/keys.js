// Participant-held keys, written by hand (no library, nothing fetched).
//
// The browser makes a P-256 key pair with WebCrypto. The private key is NOT extractable: it
// can sign, but no script (ours included) can read it. The pair is kept in IndexedDB under
// its did:key. Only the public key is ever exported, to compute the did:key.
//
// Signing: a JWT verifiable presentation (VC Data Model 1.1, section 6.3.1), ES256, with the
// server's one-time nonce and the portal's domain as aud. For a consent decision or a
// withdrawal the payload also carries "decision": the object the server built, unchanged.
"use strict";

(function () {
  const DB_NAME = "consent-portal-keys";
  const STORE = "keys";
  const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

  function database() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  async function store(mode, action) {
    const db = await database();
    return new Promise((resolve, reject) => {
      const request = action(db.transaction(STORE, mode).objectStore(STORE));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  function b64url(bytes) {
    let text = "";
    for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromB64url(text) {
    const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  const b64urlJson = (value) => b64url(new TextEncoder().encode(JSON.stringify(value)));

  function base58btc(bytes) {
    let n = 0n;
    for (const byte of bytes) n = n * 256n + BigInt(byte);
    let out = "";
    while (n > 0n) {
      out = B58[Number(n % 58n)] + out;
      n /= 58n;
    }
    for (const byte of bytes) {
      if (byte !== 0) break;
      out = "1" + out;
    }
    return out;
  }

  // did:key for P-256: multicodec p256-pub (0x1200, varint 0x80 0x24) + the compressed point.
  async function didFromPublicKey(publicKey) {
    const jwk = await crypto.subtle.exportKey("jwk", publicKey);
    const x = fromB64url(jwk.x);
    const y = fromB64url(jwk.y);
    const bytes = new Uint8Array(35);
    bytes.set([0x80, 0x24, y[31] & 1 ? 0x03 : 0x02]);
    bytes.set(x, 3);
    return "did:key:z" + base58btc(bytes);
  }

  async function createKey() {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, [
      "sign",
      "verify",
    ]);
    const did = await didFromPublicKey(pair.publicKey);
    await store("readwrite", (s) => s.put({ did, privateKey: pair.privateKey, publicKey: pair.publicKey, created: Date.now() }, did));
    return did;
  }

  // The first key this browser holds among the DIDs given (the participant's live keys).
  async function findKey(dids) {
    for (const did of dids) {
      const entry = await store("readonly", (s) => s.get(did));
      if (entry) return entry;
    }
    return null;
  }

  async function signPresentation(entry, { nonce, domain, decision }) {
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: "ES256", typ: "JWT", kid: entry.did + "#" + entry.did.slice("did:key:".length) };
    const payload = {
      iss: entry.did,
      aud: domain,
      nonce,
      iat: now,
      exp: now + 300,
      vp: {
        "@context": ["https://www.w3.org/2018/credentials/v1"],
        type: ["VerifiablePresentation"],
        holder: entry.did,
      },
    };
    if (decision !== undefined) payload.decision = decision;
    const input = b64urlJson(header) + "." + b64urlJson(payload);
    // WebCrypto's ECDSA signature is r || s, 64 bytes: exactly JWS ES256.
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, entry.privateKey, new TextEncoder().encode(input));
    return input + "." + b64url(signature);
  }

  async function postForm(url, fields) {
    const body = new FormData();
    for (const [name, value] of Object.entries(fields)) if (value !== undefined && value !== null) body.append(name, value);
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || "The portal refused the request.");
    return data;
  }

  function showError(form, message) {
    let box = form.querySelector(".sign-error");
    if (!box) {
      box = document.createElement("p");
      box.className = "sign-error error";
      box.setAttribute("role", "alert");
      form.appendChild(box);
    }
    box.textContent = message;
  }

  function csrf(form) {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // Register: make a key, answer the DID Auth challenge with it, submit the form.
  function wireRegistration(form) {
    form.addEventListener("submit", async (event) => {
      if (form.dataset.signed === "yes") return;
      event.preventDefault();
      try {
        if (!window.isSecureContext || !crypto.subtle || !window.indexedDB) {
          throw new Error("This browser cannot hold a key (it needs WebCrypto, IndexedDB and HTTPS).");
        }
        const challenge = await postForm(form.dataset.challengeUrl, { csrfmiddlewaretoken: csrf(form) });
        const did = await createKey();
        const entry = await findKey([did]);
        form.querySelector("input[name=presentation]").value = await signPresentation(entry, challenge);
        form.dataset.signed = "yes";
        form.submit();
      } catch (error) {
        showError(form, error.message);
      }
    });
  }

  // Decisions: ask for the exact decision and a nonce, sign them, submit the form.
  function wireDecision(form, dids) {
    form.addEventListener("submit", async (event) => {
      if (form.dataset.signed === "yes") return;
      event.preventDefault();
      try {
        const entry = await findKey(dids);
        if (!entry) throw new Error("This browser holds none of your registered keys. Add this device on the My keys page.");
        const fields = {
          csrfmiddlewaretoken: csrf(form),
          action: form.dataset.action,
          purpose: form.dataset.purpose,
          consent: form.dataset.consent,
        };
        // Choices made in the form itself (a withdrawal's level) are part of the decision too.
        for (const name of (form.dataset.signFields || "").split(/\s+/).filter(Boolean)) {
          const field = form.elements.namedItem(name);
          fields[name] = field ? field.value : "";
        }
        const challenge = await postForm(form.dataset.challengeUrl, fields);
        form.querySelector("input[name=signed_decision]").value = await signPresentation(entry, challenge);
        form.dataset.signed = "yes";
        form.submit();
      } catch (error) {
        showError(form, error.message);
      }
    });
  }

  function start() {
    const config = document.getElementById("participant-keys");
    const dids = config ? JSON.parse(config.textContent) : [];
    document.querySelectorAll("form[data-register-key]").forEach(wireRegistration);
    document.querySelectorAll("form[data-sign-decision]").forEach((form) => wireDecision(form, dids));
    // Tell the participant whether this browser holds one of their keys.
    document.querySelectorAll("[data-key-here]").forEach(async (cell) => {
      cell.textContent = (await findKey([cell.dataset.keyHere])) ? "this browser" : "another device";
    });
  }

  window.consentKeys = { createKey, findKey, signPresentation, didFromPublicKey };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
