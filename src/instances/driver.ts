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

/** Options of a command run inside an instance. */
export interface ExecOptions {
  /** Extra environment variables (over the instance's `environment.*` keys). */
  environment?: Record<string, string>;
  /** Working directory inside the instance (default: its root / home). */
  cwd?: string;
}

/**
 * How the daemon runs a command inside an instance: the host program it starts for it (the command
 * itself for a process instance, `lxc-attach` for a container), with the program's own environment and
 * working directory on the host.
 */
export interface ExecInvocation {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /**
   * The process that signals from the client are meant for, given the pid of `file`: the command
   * itself, which for a container is a descendant of `lxc-attach`. Default: `file`'s own process.
   */
  signalTarget?(pid: number): Promise<number>;
}

/** Where an instance's files are, seen from the host (file push and pull). */
export interface FilesRoot {
  /** The host directory that is the instance's `/`. */
  root: string;
  /** Directories that appear at a path inside the instance without being below `root` there. */
  mounts: { path: string; source: string }[];
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
  /** How to run `command` inside the running instance (exec with or without a terminal). */
  execInvocation(spec: InstanceSpec, command: string[], options: ExecOptions): Promise<ExecInvocation>;
  /** Where the instance's files are right now (a running container's root is seen through its init). */
  filesRoot(spec: InstanceSpec): Promise<FilesRoot>;
}

/** Thrown by drivers with a message meant for the user. */
export class DriverError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DriverError';
  }
}
