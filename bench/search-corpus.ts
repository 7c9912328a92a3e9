/**
 * The synthetic corpus of the search benchmark: A2A 0.3 cards that look like a real registry's, made
 * deterministically from the agent's index (a seeded PRNG per agent), so every run seeds the same data
 * whatever the batch order, and the query mix can look any agent up again without storing the corpus.
 *
 * Shape: names from word combinations (prefix, domain, role), descriptions of 1 to 3 sentences from a
 * vocabulary of a few hundred words, 1 to 8 skills with 1 to 5 tags each from about 300 tag words
 * (Zipf-weighted and clustered by the agent's domain, so some tags are common and most are rare),
 * providers from 50 organisations (also Zipf), input and output modes from a realistic set.
 */

export const CORPUS_SEED = 0x5eed_a2a;

// ------------------------------------------------------------------------------------------ random

/** mulberry32: small, fast, good enough for test data; deterministic across runs and machines. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seed for stream `stream` item `i`: agents and query paths draw from unrelated streams. */
export function seedOf(stream: number, i: number): number {
  let h = Math.imul(CORPUS_SEED ^ Math.imul(stream, 0x9e3779b1), 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  return (h ^ (h >>> 15)) >>> 0;
}

export type Random = () => number;
export const int = (r: Random, n: number) => Math.floor(r() * n);
export const pick = <T>(r: Random, items: readonly T[]): T => items[int(r, items.length)]!;
const chance = (r: Random, p: number) => r() < p;

/** Zipf-like sampler over a list in rank order: item k is drawn with weight 1 / (k + 1)^s. */
export function zipf<T>(items: readonly T[], s = 1): (r: Random) => T {
  const cumulative: number[] = [];
  let sum = 0;
  for (let k = 0; k < items.length; k++) {
    sum += 1 / (k + 1) ** s;
    cumulative.push(sum);
  }
  return (r) => {
    const x = r() * sum;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return items[lo]!;
  };
}

/** `count` distinct items drawn with `draw` (gives up after a few collisions: fewer is fine). */
function distinct<T>(count: number, draw: () => T): T[] {
  const chosen = new Set<T>();
  for (let tries = 0; chosen.size < count && tries < count * 8; tries++) chosen.add(draw());
  return [...chosen];
}

// ------------------------------------------------------------------------------------- vocabulary

/** Tag words by domain; the domain order is their popularity rank, so is the order inside a domain. */
const DOMAINS: Record<string, string[]> = {
  data: "data analytics dashboard visualization reporting statistics etl pipeline metrics spreadsheet csv bigquery kpi cohort anomaly".split(
    " ",
  ),
  code: "code programming debugging testing deployment devops kubernetes docker cloud infrastructure monitoring logging observability api database sql git refactoring documentation terraform".split(
    " ",
  ),
  language:
    "translation summarization classification extraction sentiment chat assistant search retrieval embeddings rag ocr transcription multilingual grammar".split(
      " ",
    ),
  finance:
    "finance invoice payment billing accounting ledger tax budget expense payroll banking credit loan mortgage trading portfolio stocks crypto forex".split(
      " ",
    ),
  commerce:
    "ecommerce shopping cart checkout catalog inventory pricing discount coupon order shipping delivery logistics warehouse returns fulfillment supplier procurement".split(
      " ",
    ),
  support:
    "support helpdesk ticketing faq knowledge troubleshooting feedback survey escalation chatbot".split(" "),
  marketing:
    "marketing seo advertising campaign email newsletter social branding copywriting content blog influencer leads crm sales outreach".split(
      " ",
    ),
  productivity:
    "calendar meeting notes tasks project planning reminders documents pdf slides presentation collaboration workflow automation spreadsheets".split(
      " ",
    ),
  travel:
    "travel flight hotel booking itinerary airline airport visa tourism restaurant reservation rental train transit maps navigation".split(
      " ",
    ),
  health:
    "health medical clinical patient diagnosis pharmacy prescription nutrition fitness wellness sleep mental therapy radiology genomics".split(
      " ",
    ),
  security:
    "security vulnerability authentication identity kyc fraud phishing malware encryption firewall pentest".split(
      " ",
    ),
  media: "image video audio music speech voice vision photography design podcast animation".split(" "),
  legal: "legal contract compliance regulation privacy gdpr policy litigation patent trademark court".split(
    " ",
  ),
  people:
    "recruiting hiring resume interview onboarding employee benefits training performance scheduling".split(
      " ",
    ),
  education: "education tutoring math science history quiz flashcards homework research citation".split(" "),
  weather:
    "weather forecast climate temperature rainfall wind humidity storm radar satellite pollen snow flood drought wildfire".split(
      " ",
    ),
  insurance: "insurance claims underwriting risk actuarial policyholder premium".split(" "),
  property: "realestate property listing appraisal construction architecture tenant".split(" "),
  energy: "energy solar battery grid emissions sustainability carbon recycling".split(" "),
  industry: "iot sensors robotics drones manufacturing maintenance fleet telemetry supplychain".split(" "),
  news: "news sports entertainment movies books gaming".split(" "),
  civic: "government civic permits elections census".split(" "),
  food: "agriculture crops farming food recipes cooking wine pets veterinary".split(" "),
};
const DOMAIN_NAMES = Object.keys(DOMAINS);
/** Every tag word once (about 300), most popular domain first. */
export const TAG_WORDS: string[] = [...new Set(Object.values(DOMAINS).flat())];
const drawTag = zipf(TAG_WORDS, 0.8);
const drawDomain = zipf(DOMAIN_NAMES, 0.7);

const VERBS =
  "analyze summarize translate classify extract generate search book schedule monitor detect recommend convert validate reconcile transcribe answer plan track compare estimate optimize route draft review audit notify index score match enrich deduplicate cluster predict compose label verify calculate forecast".split(
    " ",
  );
const ROLES =
  "Assistant Agent Planner Analyst Advisor Scout Concierge Navigator Copilot Helper Bot Tracker Monitor Reconciler Forecaster Translator Summarizer Curator Optimizer Auditor Guide Coach Tutor Researcher Detective Inspector Router Dispatcher Scheduler Orchestrator Broker Expert Specialist Companion Sentinel Pilot Engine Desk Hub Studio Lab Works Genie Oracle Whisperer Wizard Buddy Clerk Steward Ranger Keeper".split(
    " ",
  );
const PREFIXES =
  "Swift Atlas Nimbus Quantum Polar Aurora Beacon Cobalt Crimson Delta Echo Falcon Granite Harbor Indigo Juniper Kestrel Lumen Meridian Nova Onyx Orbit Pioneer Quartz Radiant Sable Summit Tidal Umbra Vector Willow Zephyr Apex Bright Clever Daily Open Smart Rapid Tiny Global Local Silent Blue Green Golden Silver Iron Cedar Maple Pine Oak River Stone Cloud Sky Sun Moon Star Astra Helix Pulse Spark Flux Prism Nexus Vertex Lyra Vega Orion".split(
    " ",
  );
const SUFFIXES = ["Pro", "Plus", "Lite", "X", "2", "One", "AI", "Max"];
const AUDIENCES =
  "teams|developers|analysts|small businesses|enterprises|travelers|students|clinicians|lawyers|marketers|recruiters|accountants|researchers|operators|engineers|retailers|farmers|landlords|investors|writers".split(
    "|",
  );
const ADJECTIVES =
  "accurate fast reliable secure detailed daily multilingual structured concise private automated scalable interactive realtime verified personalized".split(
    " ",
  );
const SOURCES =
  "emails documents spreadsheets websites apis databases invoices receipts images logs tickets contracts transcripts feeds reports forms chats".split(
    " ",
  );
const METHODS =
  "machine learning|large language models|retrieval augmented generation|rules and heuristics|knowledge graphs|statistical models|vector search|human review".split(
    "|",
  );
const LANGUAGES =
  "English Spanish French German Portuguese Japanese Chinese Hindi Arabic Italian Dutch Korean".split(" ");

/** 50 organisations with the domain their urls live on; drawn Zipf-weighted (a few publish a lot). */
export const ORGANIZATIONS: Array<{ name: string; domain: string }> = [
  "Acme Labs",
  "Northwind Systems",
  "Globex",
  "Initech",
  "Umbrella Analytics",
  "Stark Industries",
  "Wayne Enterprises",
  "Hooli",
  "Pied Piper",
  "Contoso",
  "Fabrikam",
  "Tailspin Toys",
  "Wingtip Travel",
  "Adventure Works",
  "Litware",
  "Proseware",
  "Lucerne Publishing",
  "Margie's Travel",
  "Blue Yonder Airlines",
  "Coho Winery",
  "Alpine Ski House",
  "Fourth Coffee",
  "Graphic Design Institute",
  "Humongous Insurance",
  "Woodgrove Bank",
  "Trey Research",
  "Wide World Importers",
  "Southridge Video",
  "City Power & Light",
  "Consolidated Messenger",
  "Datum Corporation",
  "Bellows College",
  "Relecloud",
  "VanArsdel",
  "Lamna Healthcare",
  "Nod Publishers",
  "Munson's Pickles",
  "School of Fine Art",
  "Tandem Robotics",
  "Orbital Freight",
  "Kite & Key Legal",
  "Greenleaf Energy",
  "Mosaic Health",
  "Sundial Scheduling",
  "Parallax Security",
  "Riverbend Foods",
  "Cumulus Weather",
  "Ledgerline Finance",
  "Brightpath Education",
  "Quill & Ink Media",
].map((name) => ({ name, domain: `${name.toLowerCase().replace(/[^a-z0-9]+/g, "")}.example` }));
const drawOrganization = zipf(ORGANIZATIONS, 0.9);

const INPUT_EXTRA = [
  "image/png",
  "image/jpeg",
  "application/pdf",
  "audio/wav",
  "audio/mpeg",
  "text/csv",
  "text/markdown",
  "video/mp4",
];
const OUTPUT_EXTRA = ["text/markdown", "image/png", "text/html", "application/pdf", "audio/mpeg", "text/csv"];

/** Owners: publishing clients, Zipf-weighted (client 1 publishes most). */
export const OWNER_COUNT = 200;
export const ownerId = (k: number) => `bench-client-${String(k).padStart(3, "0")}`;
const drawOwner = zipf(
  Array.from({ length: OWNER_COUNT }, (_, k) => k + 1),
  0.8,
);

// ------------------------------------------------------------------------------------------ cards

const capital = (word: string) => word.charAt(0).toUpperCase() + word.slice(1);
const slug = (text: string) =>
  text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");

/** Third person singular of the skill verbs above ("classify" -> "classifies", "match" -> "matches"). */
function thirdPerson(verb: string): string {
  if (/(s|sh|ch|x|z)$/.test(verb)) return `${verb}es`;
  if (/[^aeiou]y$/.test(verb)) return `${verb.slice(0, -1)}ies`;
  return `${verb}s`;
}

function joinList(words: string[]): string {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`;
}

function sentence(r: Random, domainWords: string[], role: string): string {
  const noun = () => (chance(r, 0.7) ? pick(r, domainWords) : drawTag(r));
  switch (int(r, 6)) {
    case 0:
      return `${capital(role.toLowerCase() === "agent" ? "An agent" : `A ${role.toLowerCase()}`)} that ${thirdPerson(pick(r, VERBS))} ${noun()} and ${noun()} for ${pick(r, AUDIENCES)}.`;
    case 1:
      return `${capital(thirdPerson(pick(r, VERBS)))} ${pick(r, ADJECTIVES)} ${noun()} from ${pick(r, SOURCES)} in real time.`;
    case 2:
      return `Built for ${pick(r, AUDIENCES)}: ${thirdPerson(pick(r, VERBS))} ${joinList(distinct(3, noun))}.`;
    case 3:
      return `Uses ${pick(r, METHODS)} to ${pick(r, VERBS)} ${noun()} across ${pick(r, SOURCES)}.`;
    case 4:
      return `Supports ${joinList(distinct(1 + int(r, 3), () => pick(r, LANGUAGES)))}.`;
    default:
      return `Keeps ${pick(r, AUDIENCES)} informed about ${noun()} with ${pick(r, ADJECTIVES)} ${noun()} updates.`;
  }
}

function modes(r: Random, base: Array<[string, number]>, extra: string[], pExtra: number): string[] {
  const chosen = base.filter(([, p]) => chance(r, p)).map(([mode]) => mode);
  if (chance(r, pExtra)) chosen.push(pick(r, extra));
  if (chosen.length === 0) chosen.push("text/plain");
  return [...new Set(chosen)];
}

export type GeneratedAgent = {
  index: number;
  card: Record<string, unknown>;
  /** What a client would have sent: the card's JSON text. */
  text: string;
  name: string;
  domain: string;
  owner: string;
  visibility: "public" | "private";
  status: "active" | "deprecated";
  statusMessage: string | null;
  health: "unknown" | "up" | "down";
  /** Clients other than the owner entitled to a private agent. */
  entitled: string[];
};

/** Agent `index` of the corpus: the same card and metadata on every run. */
export function generateAgent(index: number): GeneratedAgent {
  const r = prng(seedOf(1, index));
  const domain = drawDomain(r);
  const domainWords = DOMAINS[domain]!;
  const role = pick(r, ROLES);
  const prefix = pick(r, PREFIXES);
  const topic = capital(pick(r, domainWords));
  const shape = r();
  const name =
    shape < 0.55
      ? `${prefix} ${topic} ${role}`
      : shape < 0.7
        ? `${topic} ${role}`
        : shape < 0.8
          ? `${prefix} ${role}`
          : shape < 0.9
            ? `${prefix} ${pick(r, PREFIXES)} ${role}`
            : `${prefix} ${topic} ${role} ${pick(r, SUFFIXES)}`;
  const org = chance(r, 0.92) ? drawOrganization(r) : undefined;
  const host = `${slug(name)}-${index.toString(36)}.${org?.domain ?? "agents.example.net"}`;
  const url = `https://${host}/a2a/v1`;

  const skillCount = Math.min(8, 1 + Math.floor(-Math.log(1 - r()) * 2.8));
  const skills = distinct(skillCount, () => `${pick(r, VERBS)} ${pick(r, domainWords)}`).map((phrase) => {
    const [verb, object] = phrase.split(" ") as [string, string];
    const tagCount = 1 + int(r, 5);
    const tags = distinct(tagCount, () => (chance(r, 0.6) ? pick(r, domainWords) : drawTag(r)));
    const skill: Record<string, unknown> = {
      id: `${verb}-${object}`,
      name: `${capital(verb)} ${object}`,
      description: sentence(r, domainWords, role),
      tags,
    };
    if (chance(r, 0.6))
      skill.examples = distinct(
        1 + int(r, 2),
        () => `Can you ${verb} the ${object} for ${pick(r, SOURCES)}?`,
      );
    if (chance(r, 0.15)) skill.inputModes = [pick(r, ["text/plain", "application/json", ...INPUT_EXTRA])];
    if (chance(r, 0.15)) skill.outputModes = [pick(r, ["text/plain", "application/json", ...OUTPUT_EXTRA])];
    return skill;
  });

  const card: Record<string, unknown> = {
    protocolVersion: "0.3.0",
    name,
    description: Array.from({ length: 1 + int(r, 3) }, () => sentence(r, domainWords, role)).join(" "),
    url,
    preferredTransport: "JSONRPC",
  };
  if (chance(r, 0.3))
    card.additionalInterfaces = [
      { url, transport: "JSONRPC" },
      { url: `https://${host}/a2a/rest`, transport: "HTTP+JSON" },
    ];
  if (org) card.provider = { organization: org.name, url: `https://${org.domain}` };
  card.version = `${1 + int(r, 3)}.${int(r, 10)}.${int(r, 20)}`;
  if (chance(r, 0.5)) card.documentationUrl = `https://${host}/docs`;
  if (chance(r, 0.2)) card.iconUrl = `https://${host}/icon.png`;
  card.capabilities = {
    streaming: chance(r, 0.45),
    pushNotifications: chance(r, 0.2),
    stateTransitionHistory: chance(r, 0.1),
  };
  if (chance(r, 0.4)) {
    const oauth = chance(r, 0.6);
    card.securitySchemes = oauth
      ? {
          oauth: {
            type: "oauth2",
            flows: {
              clientCredentials: {
                tokenUrl: `https://auth.${org?.domain ?? "agents.example.net"}/token`,
                scopes: { [`${domain}:read`]: `Read ${domain}` },
              },
            },
          },
        }
      : { apiKey: { type: "apiKey", in: "header", name: "X-API-Key" } };
    card.security = [oauth ? { oauth: [`${domain}:read`] } : { apiKey: [] }];
  }
  card.defaultInputModes = modes(
    r,
    [
      ["text/plain", 0.95],
      ["application/json", 0.5],
    ],
    INPUT_EXTRA,
    0.25,
  );
  card.defaultOutputModes = modes(
    r,
    [
      ["text/plain", 0.9],
      ["application/json", 0.55],
    ],
    OUTPUT_EXTRA,
    0.2,
  );
  card.skills = skills;
  if (chance(r, 0.3)) card.supportsAuthenticatedExtendedCard = false;

  const owner = ownerId(drawOwner(r));
  const visibility = chance(r, 0.1) ? "private" : "public";
  const deprecated = chance(r, 0.02);
  const healthDraw = r();
  const entitled =
    visibility === "private" && chance(r, 0.3)
      ? distinct(1 + int(r, 2), () => ownerId(drawOwner(r))).filter((client) => client !== owner)
      : [];
  return {
    index,
    card,
    text: JSON.stringify(card),
    name,
    domain,
    owner,
    visibility,
    status: deprecated ? "deprecated" : "active",
    statusMessage: deprecated
      ? `Replaced by ${prefix} ${topic} ${pick(r, ROLES)}; shutting down soon.`
      : null,
    health: healthDraw < 0.8 ? "up" : healthDraw < 0.85 ? "down" : "unknown",
    entitled,
  };
}

/**
 * A UUIDv7 made from a timestamp and the PRNG (as Bun.randomUUIDv7 would with that clock), so ids are
 * time-ordered like real ones and the same on every run.
 */
export function deterministicUuidV7(ms: number, r: Random): string {
  const bytes = new Uint8Array(16);
  let t = ms;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = t % 256;
    t = Math.floor(t / 256);
  }
  for (let i = 6; i < 16; i++) bytes[i] = int(r, 256);
  bytes[6] = 0x70 | (bytes[6]! & 0x0f);
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  const hex = Buffer.from(bytes).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Publishing started a year before this fixed instant; agent i came i * 5 minutes / 16 later. */
const EPOCH_MS = Date.UTC(2025, 10, 1);
export const agentIdOf = (index: number) =>
  deterministicUuidV7(EPOCH_MS - 365 * 86_400_000 + index * 18_750, prng(seedOf(2, index)));

/** Words of a text as queryTokens would split them, for picking query words out of a card. */
export const wordsOf = (text: string) => text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];

export const STOP_WORDS = new Set(
  "a an and the for from with that to in of across about into real time can you".split(" "),
);
