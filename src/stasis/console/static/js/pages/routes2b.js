// The routes and navigation entries of the editors, wizards and admin pages, kept in
// one list that the shell's router appends to its own.

import * as policies from "./policies.js";
import * as groups from "./groups.js";
import * as recover from "./recover.js";
import * as instant from "./instant.js";
import * as repositories from "./repositories.js";
import * as holds from "./holds.js";
import * as audit from "./audit.js";
import { users, tokens, tenants } from "./accounts.js";

export const ROUTES2B = [
  [/^\/policies$/, policies, "policies"],
  [/^\/policies\/([^/]+)$/, policies, "policies"],
  [/^\/groups$/, groups, "groups"],
  [/^\/groups\/([^/]+)$/, groups, "groups"],
  [/^\/points\/([^/]+)\/recover$/, recover, "vms"],
  [/^\/instant$/, instant, "instant"],
  [/^\/repositories$/, repositories, "repositories"],
  [/^\/holds$/, holds, "holds"],
  [/^\/users$/, { render: users }, "users"],
  [/^\/tokens$/, { render: tokens }, "tokens"],
  [/^\/tenants$/, { render: tenants }, "tenants"],
  [/^\/audit$/, audit, "audit"],
];

// [href, text, section, the permission that shows it]
export const NAV2B = [
  ["#/policies", "Policies", "policies", "policies:read"],
  ["#/groups", "Groups", "groups", "groups:read"],
  ["#/holds", "Holds", "holds", "points:read"],
  ["#/instant", "Instant", "instant", "restores:run"],
  ["#/repositories", "Repositories", "repositories", "repositories:read"],
  ["#/users", "Users", "users", "users:admin"],
  ["#/tokens", "Tokens", "tokens", "tokens:own"],
  ["#/tenants", "Tenants", "tenants", "users:admin"],
  ["#/audit", "Audit", "audit", "audit:read"],
];
