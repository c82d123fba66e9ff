// The engine on the calling thread (no Worker): the same Engine interface, for pages
// that manage their own threading or for Workers of their own.
import type { Engine } from "./api";
import { LocalEngine } from "./local_engine";

export function createInPageEngine(): Engine {
  return new LocalEngine();
}
