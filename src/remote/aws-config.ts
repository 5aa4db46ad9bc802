/**
 * Where S3 credentials and the region come from, in the order the AWS tools use:
 * 1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN);
 * 2. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials),
 *    section AWS_PROFILE (default "default");
 * 3. the config file (AWS_CONFIG_FILE, default ~/.aws/config), section "profile NAME"
 *    ("default" for the default profile).
 * Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's `region` in the config file, else
 * us-east-1. Endpoint: the --s3-endpoint option, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL.
 * No credentials anywhere means unsigned (anonymous) requests, for public objects.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Where they were found, for messages (never the values). */
  source: string;
}

export interface AwsSettings {
  credentials: AwsCredentials | null;
  region: string;
  endpoint: string | null;
  profile: string;
}

type Env = Readonly<Record<string, string | undefined>>;
export type IniSections = Map<string, Map<string, string>>;

/** The INI dialect of the AWS files: [section], key = value, # or ; comments; keys lower-cased. */
export function parseIni(text: string): IniSections {
  const sections: IniSections = new Map();
  let current: Map<string, string> | null = null;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (header) {
      current = sections.get(header[1]) ?? new Map<string, string>();
      sections.set(header[1], current);
      continue;
    }
    const eq = line.indexOf('=');
    // Nested values (an indented "s3 =" block) and lines outside a section are not ours.
    if (eq <= 0 || !current || /^\s/.test(raw)) continue;
    current.set(line.slice(0, eq).trim().toLowerCase(), line.slice(eq + 1).trim());
  }
  return sections;
}

async function readIni(file: string): Promise<IniSections | null> {
  try {
    return parseIni(await fs.readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function credentialsIn(section: Map<string, string> | undefined, source: string): AwsCredentials | null {
  const id = section?.get('aws_access_key_id');
  const secret = section?.get('aws_secret_access_key');
  if (!id || !secret) return null;
  const token = section?.get('aws_session_token');
  return { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}), source };
}

export interface AwsFiles {
  credentials: IniSections | null;
  config: IniSections | null;
  credentialsFile: string;
  configFile: string;
}

/** The decision, from the environment and the two files' parsed content (kept pure for tests). */
export function resolveAwsSettings(env: Env, files: AwsFiles, endpointOption: string | null): AwsSettings {
  const profile = env.AWS_PROFILE || env.AWS_DEFAULT_PROFILE || 'default';
  const configSection = files.config?.get(profile === 'default' ? 'default' : `profile ${profile}`);
  let credentials: AwsCredentials | null = null;
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    credentials = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
      source: 'the environment (AWS_ACCESS_KEY_ID)',
    };
  }
  credentials ??= credentialsIn(files.credentials?.get(profile), `${files.credentialsFile} [${profile}]`);
  credentials ??= credentialsIn(configSection, `${files.configFile} [${profile === 'default' ? 'default' : `profile ${profile}`}]`);
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || configSection?.get('region') || 'us-east-1';
  const endpoint = endpointOption || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || configSection?.get('endpoint_url') || null;
  return { credentials, region, endpoint, profile };
}

export async function loadAwsSettings(env: Env, endpointOption: string | null): Promise<AwsSettings> {
  const home = env.HOME || os.homedir();
  const credentialsFile = env.AWS_SHARED_CREDENTIALS_FILE || path.join(home, '.aws', 'credentials');
  const configFile = env.AWS_CONFIG_FILE || path.join(home, '.aws', 'config');
  const [credentials, config] = await Promise.all([readIni(credentialsFile), readIni(configFile)]);
  return resolveAwsSettings(env, { credentials, config, credentialsFile, configFile }, endpointOption);
}
