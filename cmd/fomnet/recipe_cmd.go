package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/node"
)

func newRecipeCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "recipe", Short: "Chain runs into a model's stages: pretraining, mid-training, SFT, preference", Args: noArgs}
	cmd.AddCommand(newRecipeCreateCmd(e), newRecipeShowCmd(e))
	return cmd
}

func newRecipeCreateCmd(e *env) *cobra.Command {
	var (
		f      nodeFlags
		name   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME STAGE...",
		Short: "Write a recipe (its stages in order) and print its CID",
		Long: `Write a recipe: each STAGE is a run ID (a spec made with fomnet run create) or
a run spec in a JSON file, in the order they train. A later stage starts
from the last checkpoint of the one before, so its from (if any) is dropped;
every node that ran the stage before derives the same run ID for it.
fomnet join RECIPE takes part in every stage in turn.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("recipe create needs at least one stage (run ID or spec file)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := ctxOf(cmd)
			return withNode(ctx, e, &f, false, false, func(api node.API) error {
				r := &node.Recipe{Format: node.RecipeFormat, Name: name}
				for i, a := range args {
					spec, err := stageSpec(cmd, api, a)
					if err != nil {
						return err
					}
					if i > 0 {
						spec.From = nil
					}
					r.Stages = append(r.Stages, *spec)
				}
				if _, _, err := node.EncodeRecipe(r); err != nil {
					return usageError{err}
				}
				id, err := api.CreateRecipe(ctx, r)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(map[string]string{"recipe": id.String()})
				}
				fmt.Fprintln(e.stdout, id)
				return nil
			})
		},
	}
	f.addHome(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().StringVar(&name, "name", "fomnet recipe", "a name for people")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {recipe} as JSON")
	return cmd
}

// stageSpec reads a recipe stage: a run ID's spec, or a spec file.
func stageSpec(cmd *cobra.Command, api node.API, a string) (*node.RunSpec, error) {
	if strings.HasSuffix(a, ".json") {
		b, err := os.ReadFile(a)
		if err != nil {
			return nil, err
		}
		var s node.RunSpec
		if err := decodeJSONStrict(b, &s); err != nil {
			return nil, usagef("%s: %v", a, err)
		}
		return &s, nil
	}
	id, err := parseCID(a)
	if err != nil {
		return nil, err
	}
	return api.LoadRun(ctxOf(cmd), id)
}

func newRecipeShowCmd(e *env) *cobra.Command {
	var (
		f      nodeFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "show RECIPE",
		Short: "Print a recipe's stages",
		Args:  oneCID("recipe show"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, _ := parseCID(args[0])
			return withNode(ctxOf(cmd), e, &f, true, false, func(api node.API) error {
				r, err := api.LoadRecipe(ctxOf(cmd), id)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(r)
				}
				fmt.Fprintf(e.stdout, "recipe %s: %s, %d stages\n", id, r.Name, len(r.Stages))
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				for i, s := range r.Stages {
					obj := "cross-entropy"
					if pc, ok := s.Pref(); ok {
						obj = fmt.Sprintf("%s β %g", pc.Objective, pc.Beta)
					}
					from := "genesis (seed)"
					switch {
					case i > 0:
						from = "stage " + fmt.Sprint(i) + "'s last checkpoint"
					case s.From != nil:
						from = s.From.CID
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d rounds × H=%d\tdata %s\tfrom %s\n", i+1, s.Stage, obj, s.Rounds, s.Sync.H, s.Dataset.CID, from)
				}
				return tw.Flush()
			})
		},
	}
	f.addHome(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the recipe as JSON")
	return cmd
}

// decodeJSONStrict parses b as one JSON value into v, refusing unknown
// fields and anything after it.
func decodeJSONStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}
