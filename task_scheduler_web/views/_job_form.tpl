<form method="post" action="{{action}}" class="job-form" data-testid="job-form" novalidate>
  % include('_csrf.tpl')
  % include('_field_error.tpl', name='_general')
  <fieldset>
    <legend>Job</legend>
    <div class="field">
      <label for="f-id">Id</label>
      % if editing:
      <input id="f-id" name="id" value="{{form['id']}}" readonly class="mono">
      % else:
      <input id="f-id" name="id" value="{{form['id']}}" required pattern="[A-Za-z0-9_.\-]{1,64}" maxlength="64" class="mono" autocomplete="off">
      % end
      <p class="hint">Letters, digits, <span class="mono">_ . -</span>; up to 64.</p>
      % include('_field_error.tpl', name='id')
    </div>
    <div class="field">
      <label for="f-description">Description</label>
      <input id="f-description" name="description" value="{{form['description']}}">
      % include('_field_error.tpl', name='description')
    </div>
    <div class="field">
      <span class="label">Kind</span>
      <div class="choices">
        % for value, label in (('python', 'Python callable'), ('command', 'Command')):
        <label class="choice"><input type="radio" name="kind" value="{{value}}" {{'checked' if form['kind'] == value else ''}}> {{label}}</label>
        % end
      </div>
      % include('_field_error.tpl', name='kind')
    </div>
    <div class="field">
      <label for="f-target">Target</label>
      <input id="f-target" name="target" value="{{form['target']}}" class="mono" placeholder="package.module:function  or  /path/to/script.sh --flag">
      <p class="hint">A Python callable <span class="mono">pkg.mod:func</span>, or a command line (split like a shell would, not run by one).</p>
      % include('_field_error.tpl', name='target')
    </div>
  </fieldset>
  <fieldset class="trigger-fields">
    <legend>Trigger</legend>
    <div class="field">
      <div class="choices">
        % for value in ('cron', 'interval', 'date'):
        <label class="choice"><input type="radio" name="trigger_type" value="{{value}}" id="tt-{{value}}" {{'checked' if form['trigger_type'] == value else ''}}> {{value}}</label>
        % end
      </div>
      % include('_field_error.tpl', name='trigger_type')
    </div>
    <div class="field when-cron">
      <label for="f-cron">Cron expression</label>
      <input id="f-cron" name="cron_expression" value="{{form['cron_expression']}}" class="mono" placeholder="30 2 * * *">
      <p class="hint">minute hour day month weekday, as in crontab (0 and 7 are Sunday).</p>
      % include('_field_error.tpl', name='cron_expression')
    </div>
    <div class="field when-interval">
      <label for="f-interval">Interval (seconds)</label>
      <input id="f-interval" name="interval_seconds" value="{{form['interval_seconds']}}" inputmode="numeric" placeholder="300">
      % include('_field_error.tpl', name='interval_seconds')
    </div>
    <div class="field when-date">
      <label for="f-run-date">Run date</label>
      <input id="f-run-date" name="run_date" value="{{form['run_date']}}" class="mono" placeholder="2030-01-31 14:30:00">
      % include('_field_error.tpl', name='run_date')
    </div>
    <div class="field">
      <label for="f-timezone">Time zone</label>
      <input id="f-timezone" name="timezone" value="{{form['timezone']}}" placeholder="{{default_tz}}" class="mono">
      <p class="hint">An IANA name such as <span class="mono">Europe/Paris</span>; empty means the service's zone, {{default_tz}}.</p>
      % include('_field_error.tpl', name='timezone')
    </div>
    % if preview is not None:
    <div class="preview" data-testid="preview" id="preview">
      <h3>Next fire times</h3>
      % if preview:
      <ol class="times">
        % for iso in preview:
        <li>
          % include('_time.tpl', iso=iso)
          <span class="muted small">{{h['ago'](iso)}}</span>
        </li>
        % end
      </ol>
      % else:
      <p class="muted">This trigger never fires again.</p>
      % end
    </div>
    % end
  </fieldset>
  <fieldset>
    <legend>Options</legend>
    <div class="field-row">
      <div class="field">
        <label for="f-max">Max instances</label>
        <input id="f-max" name="max_instances" value="{{form['max_instances']}}" inputmode="numeric">
        % include('_field_error.tpl', name='max_instances')
      </div>
      <div class="field">
        <label for="f-timeout">Timeout (seconds)</label>
        <input id="f-timeout" name="timeout" value="{{form['timeout']}}" inputmode="numeric" placeholder="none">
        % include('_field_error.tpl', name='timeout')
      </div>
    </div>
    <div class="field">
      <label for="f-tags">Tags</label>
      <input id="f-tags" name="tags" value="{{form['tags']}}" placeholder="backup, nightly">
      <p class="hint">Separated by commas.</p>
      % include('_field_error.tpl', name='tags')
    </div>
  </fieldset>
  <div class="form-buttons">
    <button type="submit" name="action" value="save" class="btn btn-primary">{{'Save' if editing else 'Create job'}}</button>
    <button type="submit" name="action" value="preview" class="btn" formaction="{{action}}#preview">Preview</button>
    <a class="btn btn-quiet" href="{{cancel}}">Cancel</a>
  </div>
</form>
