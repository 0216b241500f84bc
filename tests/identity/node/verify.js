// An independent verifier, in another language, of the portal's consent credentials:
// Digital Bazaar's jsonld-signatures + Ed25519Signature2018 suite check didkit's proof.
//
//   node verify.js <dir of the portal's context copies> < credential.json
//
// Offline: the document loader serves our local copies of the W3C credentials and
// StatusList2021 contexts (identity/contexts), the security contexts shipped in the npm
// packages, and the did:key verification method, which it derives from the DID itself (the
// multibase public key), not from anything the portal says. Any other URL is refused.
// Prints {"verified": bool, "error"?: string}; exit 0 only when verified.
import {readFileSync} from 'node:fs';
import {join} from 'node:path';
import jsigs from 'jsonld-signatures';
import {Ed25519Signature2018} from '@digitalbazaar/ed25519-signature-2018';
import {Ed25519VerificationKey2018} from '@digitalbazaar/ed25519-verification-key-2018';
import ed2018Context from 'ed25519-signature-2018-context';
import securityContext from '@digitalbazaar/security-context';

const {purposes: {AssertionProofPurpose}} = jsigs;
const contextsDir = process.argv[2];
const local = (name) => JSON.parse(readFileSync(join(contextsDir, name), 'utf8'));

const documents = new Map([
  ['https://www.w3.org/2018/credentials/v1', local('credentials-v1.jsonld')],
  ['https://w3id.org/vc/status-list/2021/v1', local('status-list-2021-v1.jsonld')],
  [ed2018Context.constants.CONTEXT_URL, ed2018Context.contexts.get(ed2018Context.constants.CONTEXT_URL)],
  [securityContext.SECURITY_CONTEXT_V2_URL, securityContext.contexts.get(securityContext.SECURITY_CONTEXT_V2_URL)],
  [securityContext.SECURITY_CONTEXT_V1_URL, securityContext.contexts.get(securityContext.SECURITY_CONTEXT_V1_URL)],
]);

async function didKey(url) {
  // did:key:z6Mk... (Ed25519): the key is the DID's own multibase fingerprint.
  const [did, fragment] = url.split('#');
  const fingerprint = did.slice('did:key:'.length);
  const key = Ed25519VerificationKey2018.fromFingerprint({fingerprint});
  key.controller = did;
  key.id = `${did}#${fingerprint}`;
  if(fragment !== undefined && fragment !== fingerprint) {
    throw new Error(`${url} is not the key of ${did}`);
  }
  if(fragment !== undefined) {
    return key.export({publicKey: true, includeContext: true});
  }
  return {
    '@context': securityContext.SECURITY_CONTEXT_V2_URL,
    id: did,
    assertionMethod: [key.id],
    authentication: [key.id],
  };
}

async function documentLoader(url) {
  let document = documents.get(url);
  if(document === undefined && url.startsWith('did:key:z6Mk')) {
    document = await didKey(url);
  }
  if(document === undefined) {
    throw new Error(`refusing to load ${url}: no local copy, and we never fetch`);
  }
  return {contextUrl: null, documentUrl: url, document};
}

const credential = JSON.parse(readFileSync(0, 'utf8'));
const result = await jsigs.verify(credential, {
  suite: new Ed25519Signature2018(),
  purpose: new AssertionProofPurpose(),
  documentLoader,
});
const error = result.error && (result.error.errors || [result.error]).map((e) => e.message).join('; ');
process.stdout.write(JSON.stringify({verified: result.verified, ...(error ? {error} : {})}) + '\n');
process.exit(result.verified ? 0 : 1);
