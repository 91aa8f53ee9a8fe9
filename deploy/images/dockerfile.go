package images

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Dockerfile is the part of a Dockerfile the spec checks hold it to.
type Dockerfile struct {
	Stages []Stage
}

// Stage is one FROM ... section.
type Stage struct {
	From, Name string
	Runs       []string
	Copies     []Copy
	Env        map[string]string
	User       string
	Entrypoint []string
}

// Copy is one COPY instruction.
type Copy struct {
	From string // --from stage, "" for the build context
	Srcs []string
	Dest string
}

// Final is the stage the image is made of.
func (d *Dockerfile) Final() *Stage { return &d.Stages[len(d.Stages)-1] }

// ParseDockerfile reads the instructions this project's Dockerfiles use
// (ARG, FROM, WORKDIR, RUN, COPY, ENV, USER, ENTRYPOINT); anything else is an
// error, so a new instruction cannot slip past the checks.
func ParseDockerfile(r io.Reader) (*Dockerfile, error) {
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	d := &Dockerfile{}
	for _, line := range lines {
		op, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		op = strings.ToUpper(op)
		if op == "ARG" {
			continue
		}
		if op == "FROM" {
			f := strings.Fields(rest)
			st := Stage{From: f[0], Env: map[string]string{}}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			d.Stages = append(d.Stages, st)
			continue
		}
		if len(d.Stages) == 0 {
			return nil, fmt.Errorf("%s before FROM", op)
		}
		st := &d.Stages[len(d.Stages)-1]
		switch op {
		case "WORKDIR":
		case "RUN":
			st.Runs = append(st.Runs, rest)
		case "COPY":
			f := strings.Fields(rest)
			var c Copy
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				if v, ok := strings.CutPrefix(f[0], "--from="); ok {
					c.From = v
				}
				f = f[1:]
			}
			if len(f) < 2 {
				return nil, fmt.Errorf("COPY %s: want sources and a destination", rest)
			}
			c.Srcs, c.Dest = f[:len(f)-1], f[len(f)-1]
			st.Copies = append(st.Copies, c)
		case "ENV":
			for _, kv := range splitEnv(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("ENV %s: want KEY=VALUE", rest)
				}
				st.Env[k] = strings.Trim(v, `"`)
			}
		case "USER":
			st.User = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &st.Entrypoint); err != nil {
				return nil, fmt.Errorf("ENTRYPOINT %s: want the JSON (exec) form: %w", rest, err)
			}
		default:
			return nil, fmt.Errorf("unexpected instruction %s", op)
		}
	}
	if len(d.Stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return d, nil
}

// splitEnv splits KEY=VALUE pairs on spaces outside double quotes.
func splitEnv(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// Installed lists the files the final stage copies in, by destination
// path (a destination ending in / receives each source's base name).
func (s *Stage) Installed() map[string]string {
	out := map[string]string{}
	for _, c := range s.Copies {
		for _, src := range c.Srcs {
			dest := c.Dest
			if strings.HasSuffix(dest, "/") {
				dest += src[strings.LastIndex(src, "/")+1:]
			}
			out[dest] = src
		}
	}
	return out
}
