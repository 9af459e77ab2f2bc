// The instance driver interface: every instance type (process, container, sim) runs behind it.

/** What a driver needs to know about one instance. */
export interface InstanceSpec {
  name: string;
  project: string;
  type: string;
  /** Instance config (`process.command`, `environment.*`, `limits.*`, ...). */
  config: Record<string, string>;
  /** Devices after profile expansion. */
  devices: Record<string, Record<string, string>>;
  /** The root volume's directory on this member (the process driver's working directory). */
  rootPath: string;
  /** A per-instance directory for logs, pid files and driver state, outside the root volume. */
  runtimeDir: string;
  /** Custom volumes attached as `disk` devices: where their data is, and the device's `path`. */
  mounts: { device: string; source: string; path: string }[];
}

/** LXD's instance status words. */
export type InstanceStatus = 'Running' | 'Stopped' | 'Frozen' | 'Error';

/** Runtime state reported by a driver. */
export interface InstanceRuntimeState {
  status: InstanceStatus;
  /** Main process id while running, else 0. */
  pid: number;
  /** Number of processes in the instance while running (at least 1), else 0. */
  processes: number;
  /** When the current run began, if running. */
  startedAt: Date | null;
  /** Resident memory in bytes if known. */
  memoryBytes: number;
}

/** What a driver can do beyond the basics. */
export interface DriverCapabilities {
  /** Can copy its volume while running, then stop and copy the changes (pre-copy). */
  precopy: boolean;
  /** Can checkpoint and restore a running instance (CRIU). */
  liveMigrate: boolean;
}

/** Options for stop. */
export interface StopOptions {
  /** Seconds to wait for a clean shutdown before killing; 0 with force kills at once. */
  timeoutSeconds: number;
  /** Kill at once, no clean shutdown. */
  force: boolean;
}

/** What a command run inside an instance produced. */
export interface ExecResult {
  code: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** Options of a command run inside an instance. */
export interface ExecOptions {
  /** Extra environment variables. */
  environment?: Record<string, string>;
  /** Working directory inside the instance (default: its root / home). */
  cwd?: string;
  /** Kill the command after this many seconds (default 600). */
  timeoutSeconds?: number;
}

/** An instance driver. Instances must outlive the daemon: start detaches them, state re-adopts them. */
export interface InstanceDriver {
  readonly type: string;
  readonly capabilities: DriverCapabilities;
  /** Prepare driver state for a new instance whose root volume exists. */
  create(spec: InstanceSpec): Promise<void>;
  /** Start the instance, detached from the daemon. Resolves once it is running. */
  start(spec: InstanceSpec): Promise<void>;
  /** Stop cleanly within `timeoutSeconds`, then kill. Resolves once it is stopped. */
  stop(spec: InstanceSpec, options: StopOptions): Promise<void>;
  /** Current state; re-adopts an instance left running by a previous daemon. */
  state(spec: InstanceSpec): Promise<InstanceRuntimeState>;
  /** Remove driver state (the instance is stopped; volumes are removed by storage). */
  delete(spec: InstanceSpec): Promise<void>;
  /** Run a command inside the running instance and collect its output (LXD's record-output exec). */
  exec?(spec: InstanceSpec, command: string[], options: ExecOptions): Promise<ExecResult>;
}

/** Thrown by drivers with a message meant for the user. */
export class DriverError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DriverError';
  }
}
