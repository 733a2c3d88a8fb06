'use strict';
// Signs a webhook body with the sender's own SDK, as the sender's servers
// (or its test helpers) do: GitHub's `@octokit/webhooks-methods`, Svix's
// `svix` (Clerk, Resend), Stripe's `stripe`, Sanity's `@sanity/webhook`,
// Contentful's `@contentful/node-apps-toolkit`. Used by infra/local/tests/senders.rs.
//
//   node tests/senders/sdk-sign.js SDK SECRET BODY_FILE [KEY=VALUE ...]
//
// prints a JSON object of the headers to send with the body's exact bytes.

const fs = require('fs');
const crypto = require('crypto');

const [sdk, secret, bodyFile, ...pairs] = process.argv.slice(2);
const extra = Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
const body = fs.readFileSync(bodyFile, 'utf8');

async function sign() {
  switch (sdk) {
    case 'github': {
      // ESM only.
      const { sign } = await import('@octokit/webhooks-methods');
      return { 'X-Hub-Signature-256': await sign(secret, body) };
    }
    case 'svix': {
      const { Webhook } = require('svix');
      const id = `msg_${crypto.randomBytes(12).toString('hex')}`;
      const at = new Date();
      const signature = new Webhook(secret).sign(id, at, body);
      return { 'svix-id': id, 'svix-timestamp': String(Math.floor(at.getTime() / 1000)), 'svix-signature': signature };
    }
    case 'stripe': {
      const Stripe = require('stripe');
      const stripe = new Stripe('sk_test_unused');
      return { 'Stripe-Signature': stripe.webhooks.generateTestHeaderString({ payload: body, secret }) };
    }
    case 'sanity': {
      const { encodeSignatureHeader, SIGNATURE_HEADER_NAME } = require('@sanity/webhook');
      return { [SIGNATURE_HEADER_NAME]: await encodeSignatureHeader(body, Date.now(), secret) };
    }
    case 'contentful': {
      const { signRequest } = require('@contentful/node-apps-toolkit');
      const { path, ...headers } = extra;
      return signRequest(secret, { method: 'POST', path, headers, body }, Date.now());
    }
    default:
      throw new Error(`no SDK signer for ${sdk}`);
  }
}

const passed = { ...extra };
delete passed.path;
sign().then((headers) => process.stdout.write(JSON.stringify({ ...passed, ...headers })));
