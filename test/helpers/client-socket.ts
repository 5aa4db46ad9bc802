/**
 * The socket under an NbdClient, for tests that must stop reading replies to hold a server at
 * its in-flight limit (replies the client does not read stay in the server's socket, and the
 * server counts them). NbdClient keeps its socket private; it is there at run time.
 */
import type net from 'node:net';
import type { NbdClient } from '../../src/nbd/client.js';

export function socketOf(client: NbdClient): net.Socket {
  const socket = (client as unknown as { socket?: net.Socket }).socket;
  if (!socket) throw new Error('NbdClient has no socket field any more: update test/helpers/client-socket.ts');
  return socket;
}
