# frozen_string_literal: true

# Reads cluster.yaml for the Vagrantfile: the hosts (name, IP, role, CPUs, memory) and the PKI
# directory. It checks only what Vagrant needs to define the machines, and reports every problem
# at once with the field path, like `ctl`. The full validation (CIDRs, versions, unknown keys, ...)
# is `ctl`'s: the real-VM path runs `ctl pki init`, which validates, before `vagrant up`.
#
# Plain Ruby + the standard library, so it runs inside Vagrant and under a bare `ruby`
# (vagrant/ci-check.sh calls `ruby vagrant/lib/cluster_yaml.rb FILE` to print the plan).

require "ipaddr"
require "yaml"

module KubeAgents
  # A VM to define: one host of cluster.yaml.
  Host = Struct.new(:name, :ip, :role, :cpus, :memory_mb, keyword_init: true)

  # The parts of cluster.yaml the Vagrantfile uses.
  Cluster = Struct.new(:path, :hosts, :pki_dir, :agent_port, keyword_init: true) do
    def master
      hosts.find { |h| h.role == :master }
    end
  end

  # cluster.yaml cannot be used; the message lists every problem, one per line.
  class ClusterError < StandardError; end

  DEFAULT_CPUS = 2
  DEFAULT_MEMORY_MB = 2048
  # kubeadm's preflight minimums for a control plane (the same limits `ctl` enforces).
  MASTER_MIN_CPUS = 2
  MASTER_MIN_MEMORY_MB = 1700
  DEFAULT_AGENT_PORT = 50051
  # A Kubernetes node name that is also a usable host name: an RFC 1123 label.
  NAME_RE = /\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\z/.freeze
  # Names the PKI uses for its own files (pki/ca.crt, pki/admin.crt).
  RESERVED_NAMES = %w[admin ca].freeze

  # Loads and checks `path`; raises ClusterError naming the file and each bad field.
  def self.load_cluster(path)
    path = File.expand_path(path)
    text = begin
      File.read(path)
    rescue SystemCallError => e
      raise ClusterError, "#{path}: cannot read: #{e.message}"
    end
    doc = begin
      YAML.safe_load(text, filename: path)
    rescue Psych::Exception => e
      raise ClusterError, "#{path}: not valid YAML: #{e.message}"
    end
    problems = []
    cluster = parse(doc, File.dirname(path), problems)
    unless problems.empty?
      raise ClusterError, problems.map { |p| "#{path}: #{p}" }.join("\n")
    end
    cluster.path = path
    cluster
  end

  def self.parse(doc, dir, problems)
    unless doc.is_a?(Hash)
      problems << "expected a mapping with master, nodes and podCIDR, found #{doc.class.name.downcase}"
      return nil
    end
    raw = []
    if doc["master"].nil?
      problems << "master: missing; cluster.yaml needs `master: {name: k8s-master, ip: 192.168.50.10}`"
    else
      raw << ["master", doc["master"], :master]
    end
    nodes = doc["nodes"] || []
    if nodes.is_a?(Array)
      nodes.each_with_index { |n, i| raw << ["nodes[#{i}]", n, :node] }
    else
      problems << "nodes: must be a list of {name, ip}, found #{nodes.inspect}"
    end

    names = {}
    ips = {}
    hosts = raw.map { |field, h, role| parse_host(field, h, role, names, ips, problems) }.compact

    port = doc.fetch("agentPort", DEFAULT_AGENT_PORT)
    unless port.is_a?(Integer) && port.between?(1, 65_535)
      problems << "agentPort: #{port.inspect} is not a TCP port (1-65535)"
    end
    pki = doc.fetch("pkiDir", "pki")
    unless pki.is_a?(String) && !pki.empty?
      problems << "pkiDir: must be a directory path, found #{pki.inspect}"
      pki = "pki"
    end
    Cluster.new(hosts: hosts, pki_dir: File.expand_path(pki, dir), agent_port: port)
  end

  def self.parse_host(field, h, role, names, ips, problems)
    unless h.is_a?(Hash)
      problems << "#{field}: must be a mapping {name, ip}, found #{h.inspect}"
      return nil
    end
    ok = true
    name = h["name"]
    if !name.is_a?(String) || name !~ NAME_RE
      problems << "#{field}.name: #{name.inspect} is not a host name (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)"
      ok = false
    elsif RESERVED_NAMES.include?(name)
      problems << "#{field}.name: #{name.inspect} is reserved for the PKI; pick another name"
      ok = false
    elsif (other = names[name])
      problems << "#{field}.name: #{name.inspect} is also the name of #{other}; host names must be unique"
      ok = false
    else
      names[name] = field
    end

    ip = h["ip"]
    addr = begin
      IPAddr.new(ip.to_s)
    rescue IPAddr::Error
      nil
    end
    if addr.nil? || !addr.ipv4? || ip.to_s.include?("/") || ip.to_s.split(".").length != 4
      problems << "#{field}.ip: #{ip.inspect} is not an IPv4 address"
      ok = false
    elsif (other = ips[addr.to_s])
      problems << "#{field}.ip: #{addr} is also the IP of #{other}; host IPs must be unique"
      ok = false
    else
      ips[addr.to_s] = field
    end

    cpus = positive(field, h, "cpus", DEFAULT_CPUS, problems)
    memory = positive(field, h, "memoryMb", DEFAULT_MEMORY_MB, problems)
    if role == :master && cpus && cpus < MASTER_MIN_CPUS
      problems << "#{field}.cpus: #{cpus} is too few: kubeadm needs at least #{MASTER_MIN_CPUS} CPUs on the control plane"
      ok = false
    end
    if role == :master && memory && memory < MASTER_MIN_MEMORY_MB
      problems << "#{field}.memoryMb: #{memory} MiB is too little: kubeadm needs at least #{MASTER_MIN_MEMORY_MB} MB on the control plane"
      ok = false
    end
    return nil unless ok && cpus && memory

    Host.new(name: name, ip: addr.to_s, role: role, cpus: cpus, memory_mb: memory)
  end

  def self.positive(field, h, key, default, problems)
    v = h.fetch(key, default)
    return v if v.is_a?(Integer) && v.positive?

    problems << "#{field}.#{key}: #{v.inspect} must be a whole number of at least 1"
    nil
  end
end

# `ruby cluster_yaml.rb FILE`: print the machines Vagrant would define, one per line
# (name role ip cpus memoryMb), or the problems on stderr and exit 1.
if $PROGRAM_NAME == __FILE__
  begin
    c = KubeAgents.load_cluster(ARGV.fetch(0, "cluster.yaml"))
    c.hosts.each { |h| puts [h.name, h.role, h.ip, h.cpus, h.memory_mb].join(" ") }
  rescue KubeAgents::ClusterError => e
    warn e.message
    exit 1
  end
end
